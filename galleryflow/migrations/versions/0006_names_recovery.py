"""web_name reservations; a photo is its content within its set; session owners

Revision ID: 0006_names_recovery
Revises: 0005_caption_evidence
Create Date: 2026-12-02 12:00:00

- ``web_name``: web file names reserved for one photo each, unique on the name
  case-folded like the gallery's collation (galleryflow/db/names.py). Existing
  rows' names are reserved here, published rows first, then by id; a name two
  rows already share stays with the first (the other is refused at publish and
  gets a new name in review).
- ``review_queue``: unique on (set_key, sha256) instead of (set_key,
  original_name): a file re-exported under a known name with other bytes is a
  new photo (issue 13). Rows of one set that share content are impossible
  before this revision too (one row per name, and validation refuses duplicate
  names), except the same bytes under two names: the migration refuses those
  with a clear message instead of guessing which row to keep.
- ``image_set.owner``: host:pid:start-time of the process running a session, so
  the next run can tell a dead session from a live one.

(Written beside 0005 on another branch; chained after it when the two met.)
"""

from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa


revision = '0006_names_recovery'
down_revision = '0005_caption_evidence'
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    dup = bind.execute(sa.text(
        "SELECT set_key, sha256, COUNT(*) FROM review_queue GROUP BY set_key, sha256 "
        "HAVING COUNT(*) > 1")).fetchall()
    if dup:
        listed = ", ".join(f"{k} ({n} rows)" for k, _, n in dup[:10])
        raise RuntimeError(
            "review_queue holds the same photo (sha256) twice in one set, which revision "
            f"0006 makes impossible: {listed}. Delete the extra rows, then migrate again.")
    op.create_table(
        'web_name',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name_key', sa.String(length=255), nullable=False),
        sa.Column('file_name', sa.String(length=255), nullable=False),
        sa.Column('review_id', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['review_id'], ['review_queue.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name_key'),
    )
    op.create_index(op.f('ix_web_name_review_id'), 'web_name', ['review_id'], unique=False)
    with op.batch_alter_table('review_queue', schema=None) as batch_op:
        batch_op.drop_constraint('uq_review_set_file', type_='unique')
        batch_op.create_unique_constraint('uq_review_set_sha', ['set_key', 'sha256'])
        batch_op.create_index('ix_review_set_file', ['set_key', 'original_name'], unique=False)
    with op.batch_alter_table('image_set', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner', sa.String(length=255), nullable=True))

    rows = bind.execute(sa.text(
        "SELECT id, web_file_name FROM review_queue WHERE web_file_name IS NOT NULL "
        "ORDER BY CASE WHEN status = 'published' THEN 0 ELSE 1 END, id")).fetchall()
    seen: set[str] = set()
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    web_name = sa.table('web_name', sa.column('name_key'), sa.column('file_name'),
                        sa.column('review_id'), sa.column('created_at'))
    values = []
    for row_id, name in rows:
        key = name.strip().lower()
        if key and key not in seen:
            seen.add(key)
            values.append({"name_key": key, "file_name": name.strip(), "review_id": row_id,
                           "created_at": now})
    if values:
        op.bulk_insert(web_name, values)


def downgrade() -> None:
    with op.batch_alter_table('image_set', schema=None) as batch_op:
        batch_op.drop_column('owner')
    with op.batch_alter_table('review_queue', schema=None) as batch_op:
        batch_op.drop_index('ix_review_set_file')
        batch_op.drop_constraint('uq_review_set_sha', type_='unique')
        batch_op.create_unique_constraint('uq_review_set_file', ['set_key', 'original_name'])
    op.drop_index(op.f('ix_web_name_review_id'), table_name='web_name')
    op.drop_table('web_name')
