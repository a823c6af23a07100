"""Auth policy stored with the tokens, and history notes told apart from state changes.

- ``auth_policy``: whether tokens are checked and whether reading needs one, once a token
  exists. It lives in the database, changed by an admin only, because a setting in the
  caller's environment (PIPELINE_AUTH=off) let any caller switch auth off for itself.
- ``job_events.kind``: "note" for remarks that change nothing (a notification's outcome),
  so that history readers no longer see them as ``completed → completed`` transitions.
  Earlier notes are marked from their shape (same state, no step, a notification detail).

Revision ID: 0006s (a name of its own, so that other branches' 0006 can sit beside it:
``migrate`` upgrades every head)
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006s"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_policy",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("enforce", sa.Boolean, nullable=False),
        sa.Column("viewers", sa.String(8), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(255)),
    )
    with op.batch_alter_table("job_events") as batch:
        batch.add_column(sa.Column("kind", sa.String(8)))
    op.execute("UPDATE job_events SET kind = 'note' WHERE from_state = to_state "
               "AND step IS NULL AND (detail LIKE 'notified %' "
               "OR detail LIKE '% notification failed after %')")


def downgrade() -> None:
    with op.batch_alter_table("job_events") as batch:
        batch.drop_column("kind")
    op.drop_table("auth_policy")
