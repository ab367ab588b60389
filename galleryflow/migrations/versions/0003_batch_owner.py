"""batch jobs: who runs a job, and when it last showed life

Revision ID: 0003_batch_owner
Revises: 0002_batch
Create Date: 2026-11-21 08:00:00

A job whose process was killed (SIGKILL, power cut, OOM killer) never writes its
end, so ``batch status`` showed it ``running`` for ever. ``batch_job.owner``
(``host:pid:start-time`` of the process running it) lets a status read on the
same host see that the process is gone and mark the job ``crashed``;
``heartbeat_at`` (set at the start and as each chunk finishes) lets a reader on
another host call a silent job ``stale``.
"""

from alembic import op
import sqlalchemy as sa


revision = '0003_batch_owner'
down_revision = '0002_batch'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('batch_job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('heartbeat_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('batch_job', schema=None) as batch_op:
        batch_op.drop_column('heartbeat_at')
        batch_op.drop_column('owner')
