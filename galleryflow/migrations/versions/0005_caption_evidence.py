"""Stage 7's evidence and proof: the original's text fields, classifier hints, attempts, overrides

Revision ID: 0005_caption_evidence
Revises: 0004_file_mtime
Create Date: 2026-12-02 12:00:00

- ``review_queue.embedded_text``: the original's own text fields read at stage 3
  (EXIF ImageDescription and UserComment, IPTC keywords, caption and city, XMP
  subject and description) — keyword evidence photographers often pre-fill;
- ``review_queue.visual_hints``: stage 5's classifier-assisted hints (CLIP zero-shot
  labels with their scores, and the model that made them), or none without weights;
- ``metadata_quality.attempts``: each model request of stage 7 for the row (model,
  outcome, fault codes), so the proof shows every attempt;
- ``metadata_quality.overrides``: a reviewer's overrides of false positives, with
  their reason, who and when.
"""

from alembic import op
import sqlalchemy as sa


revision = '0005_caption_evidence'
down_revision = '0004_file_mtime'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('review_queue', schema=None) as batch_op:
        batch_op.add_column(sa.Column('embedded_text', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('visual_hints', sa.JSON(), nullable=True))
    with op.batch_alter_table('metadata_quality', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attempts', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('overrides', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('metadata_quality', schema=None) as batch_op:
        batch_op.drop_column('overrides')
        batch_op.drop_column('attempts')
    with op.batch_alter_table('review_queue', schema=None) as batch_op:
        batch_op.drop_column('visual_hints')
        batch_op.drop_column('embedded_text')
