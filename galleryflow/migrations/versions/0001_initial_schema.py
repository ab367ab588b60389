"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-21 02:35:04.673708
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('batch_job',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('operation', sa.String(length=32), nullable=False),
    sa.Column('preset', sa.String(length=64), nullable=True),
    sa.Column('input_pattern', sa.String(length=1024), nullable=False),
    sa.Column('output_directory', sa.String(length=1024), nullable=False),
    sa.Column('parameters', sa.JSON(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('completed', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('skipped', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('image_set',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('set_key', sa.String(length=255), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('source_dir', sa.String(length=1024), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('flow_run_id', sa.String(length=64), nullable=True),
    sa.Column('location', sa.String(length=255), nullable=True),
    sa.Column('subject', sa.String(length=255), nullable=True),
    sa.Column('content_sha256', sa.String(length=64), nullable=True),
    sa.Column('image_count', sa.Integer(), nullable=False),
    sa.Column('excluded_count', sa.Integer(), nullable=False),
    sa.Column('report', sa.JSON(), nullable=True),
    sa.Column('stage_seconds', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('image_set', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_image_set_content_sha256'), ['content_sha256'], unique=False)
        batch_op.create_index(batch_op.f('ix_image_set_flow_run_id'), ['flow_run_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_image_set_set_key'), ['set_key'], unique=False)

    op.create_table('seen_content',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('content_sha256', sa.String(length=64), nullable=False),
    sa.Column('folder', sa.String(length=1024), nullable=False),
    sa.Column('queue', sa.String(length=32), nullable=False),
    sa.Column('flow_run_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('content_sha256')
    )
    op.create_table('batch_file',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('input_path', sa.String(length=1024), nullable=False),
    sa.Column('output_path', sa.String(length=1024), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('input_bytes', sa.BigInteger(), nullable=True),
    sa.Column('output_bytes', sa.BigInteger(), nullable=True),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('height', sa.Integer(), nullable=True),
    sa.Column('seconds', sa.Float(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['batch_job.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('batch_file', schema=None) as batch_op:
        batch_op.create_index('ix_batch_file_job', ['job_id'], unique=False)

    op.create_table('review_queue',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('set_key', sa.String(length=255), nullable=False),
    sa.Column('original_name', sa.String(length=255), nullable=False),
    sa.Column('image_set_id', sa.Integer(), nullable=False),
    sa.Column('created_session_id', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('phash', sa.String(length=32), nullable=True),
    sa.Column('file_size', sa.BigInteger(), nullable=True),
    sa.Column('image_format', sa.String(length=16), nullable=True),
    sa.Column('source_path', sa.String(length=1024), nullable=False),
    sa.Column('incoming_path', sa.String(length=1024), nullable=True),
    sa.Column('ollama_path', sa.String(length=1024), nullable=True),
    sa.Column('thumbnail_path', sa.String(length=1024), nullable=True),
    sa.Column('taken_at', sa.DateTime(), nullable=True),
    sa.Column('camera_make', sa.String(length=128), nullable=True),
    sa.Column('camera_model', sa.String(length=128), nullable=True),
    sa.Column('lens', sa.String(length=255), nullable=True),
    sa.Column('exposure_time', sa.String(length=32), nullable=True),
    sa.Column('f_number', sa.Float(), nullable=True),
    sa.Column('iso', sa.Integer(), nullable=True),
    sa.Column('focal_length', sa.Float(), nullable=True),
    sa.Column('gps_lat', sa.Float(), nullable=True),
    sa.Column('gps_lon', sa.Float(), nullable=True),
    sa.Column('gps_alt', sa.Float(), nullable=True),
    sa.Column('orientation', sa.Integer(), nullable=True),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('height', sa.Integer(), nullable=True),
    sa.Column('brisque_score', sa.Float(), nullable=True),
    sa.Column('brisque_source', sa.String(length=255), nullable=True),
    sa.Column('clip_aesthetic_score', sa.Float(), nullable=True),
    sa.Column('clip_aesthetic_source', sa.String(length=255), nullable=True),
    sa.Column('blur_score', sa.Float(), nullable=True),
    sa.Column('brightness_score', sa.Float(), nullable=True),
    sa.Column('contrast_score', sa.Float(), nullable=True),
    sa.Column('stats_source', sa.String(length=255), nullable=True),
    sa.Column('caption', sa.Text(), nullable=True),
    sa.Column('alt_text', sa.Text(), nullable=True),
    sa.Column('keywords', sa.JSON(), nullable=True),
    sa.Column('subject', sa.String(length=255), nullable=True),
    sa.Column('location', sa.String(length=255), nullable=True),
    sa.Column('web_file_name', sa.String(length=255), nullable=True),
    sa.Column('generation_mode', sa.String(length=32), nullable=True),
    sa.Column('edited_fields', sa.JSON(), nullable=True),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('proof_status', sa.String(length=16), nullable=False),
    sa.Column('reviewer', sa.String(length=255), nullable=True),
    sa.Column('review_note', sa.Text(), nullable=True),
    sa.Column('decided_at', sa.DateTime(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('error_category', sa.String(length=64), nullable=True),
    sa.Column('remote_id', sa.String(length=64), nullable=True),
    sa.Column('public_url', sa.String(length=1024), nullable=True),
    sa.Column('thumbnail_url', sa.String(length=1024), nullable=True),
    sa.Column('published_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['created_session_id'], ['image_set.id'], ),
    sa.ForeignKeyConstraint(['image_set_id'], ['image_set.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('set_key', 'original_name', name='uq_review_set_file')
    )
    with op.batch_alter_table('review_queue', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_review_queue_image_set_id'), ['image_set_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_review_queue_sha256'), ['sha256'], unique=False)
        batch_op.create_index(batch_op.f('ix_review_queue_web_file_name'), ['web_file_name'], unique=False)
        batch_op.create_index('ix_review_status', ['status'], unique=False)

    op.create_table('metadata_quality',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('review_id', sa.Integer(), nullable=False),
    sa.Column('passed', sa.Boolean(), nullable=False),
    sa.Column('field_states', sa.JSON(), nullable=True),
    sa.Column('issues', sa.JSON(), nullable=True),
    sa.Column('repair_attempts', sa.Integer(), nullable=False),
    sa.Column('fallback_used', sa.Boolean(), nullable=False),
    sa.Column('fallback_reason', sa.Text(), nullable=True),
    sa.Column('generation_mode', sa.String(length=32), nullable=True),
    sa.Column('model', sa.String(length=255), nullable=True),
    sa.Column('prompt_version', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['review_id'], ['review_queue.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('review_id')
    )
    op.create_table('publish_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('review_id', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('target', sa.String(length=255), nullable=False),
    sa.Column('remote_path', sa.String(length=1024), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('size', sa.BigInteger(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('flow_run_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['review_id'], ['review_queue.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('publish_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_publish_log_review_id'), ['review_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('publish_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_publish_log_review_id'))

    op.drop_table('publish_log')
    op.drop_table('metadata_quality')
    with op.batch_alter_table('review_queue', schema=None) as batch_op:
        batch_op.drop_index('ix_review_status')
        batch_op.drop_index(batch_op.f('ix_review_queue_web_file_name'))
        batch_op.drop_index(batch_op.f('ix_review_queue_sha256'))
        batch_op.drop_index(batch_op.f('ix_review_queue_image_set_id'))

    op.drop_table('review_queue')
    with op.batch_alter_table('batch_file', schema=None) as batch_op:
        batch_op.drop_index('ix_batch_file_job')

    op.drop_table('batch_file')
    op.drop_table('seen_content')
    with op.batch_alter_table('image_set', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_image_set_set_key'))
        batch_op.drop_index(batch_op.f('ix_image_set_flow_run_id'))
        batch_op.drop_index(batch_op.f('ix_image_set_content_sha256'))

    op.drop_table('image_set')
    op.drop_table('batch_job')
