"""review_queue.file_mtime_ns: the incoming copy's stamp, so no stage hashes it again

Revision ID: 0004_file_mtime
Revises: 0003_batch_owner
Create Date: 2026-11-28 09:00:00

Intake hashes a photo once, while copying it into ``incoming/``; later stages
carry it by that sha256. To trust it they check that the copy is still the file
intake wrote: its size (``file_size``, already there) and its modification time
in nanoseconds, recorded here. Rows from before this revision have none and are
checked by hashing, as before, until a rerun's intake records it.
"""

from alembic import op
import sqlalchemy as sa


revision = '0004_file_mtime'
down_revision = '0003_batch_owner'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('review_queue', schema=None) as batch_op:
        batch_op.add_column(sa.Column('file_mtime_ns', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('review_queue', schema=None) as batch_op:
        batch_op.drop_column('file_mtime_ns')
