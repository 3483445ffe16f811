"""add new feature

Revision ID: fc0bfa77ff5a
Revises: 5d8b746712b6
Create Date: 2025-08-17 08:22:40.112358

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'fc0bfa77ff5a'
down_revision: Union[str, None] = '5d8b746712b6'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
