"""batch jobs: a job-level error and a per-file note

Revision ID: 0002_batch
Revises: 0001
Create Date: 2026-11-21 12:00:00

``batch_job.error`` says why a job stopped as a whole (bad parameters, no disk
left, nothing matched), which no per-file row can say. ``batch_file.note`` carries
what a photographer should know about a file that *succeeded* (kept the original
because re-encoding was larger, first frame of an animation used, target size not
reached), so ``error`` stays reserved for failures.
"""

from alembic import op
import sqlalchemy as sa


revision = '0002_batch'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('batch_job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('error', sa.Text(), nullable=True))
    with op.batch_alter_table('batch_file', schema=None) as batch_op:
        batch_op.add_column(sa.Column('note', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('batch_file', schema=None) as batch_op:
        batch_op.drop_column('note')
    with op.batch_alter_table('batch_job', schema=None) as batch_op:
        batch_op.drop_column('error')
