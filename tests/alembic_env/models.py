"""SQLAlchemy models of the original silica cron project (target_metadata for
autogenerate / `alembic check` in this environment).

Same tables as the original silica/cron/models/prompt.py, plus the `priority`
column that revision 34065a4cc718 adds (Integer, NOT NULL, Python-side default 1),
so that `alembic check` at head reports no differences.
"""
from sqlalchemy import Boolean, Column, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import declarative_base, relationship
from sqlalchemy.sql import func

Base = declarative_base()


class Prompt(Base):
    """A reusable prompt."""

    __tablename__ = "prompts"

    id = Column(Integer, primary_key=True, index=True)
    name = Column(String(255), nullable=False, index=True)
    description = Column(Text)
    prompt_text = Column(Text, nullable=False)
    model = Column(String(50), nullable=False, default="haiku")
    persona = Column(String(50), nullable=False, default="basic_agent")
    created_at = Column(DateTime, server_default=func.now())
    updated_at = Column(DateTime, server_default=func.now(), onupdate=func.now())
    priority = Column(Integer, nullable=False, default=1)

    scheduled_jobs = relationship("ScheduledJob", back_populates="prompt")


class ScheduledJob(Base):
    """A prompt scheduled with a cron expression."""

    __tablename__ = "scheduled_jobs"

    id = Column(Integer, primary_key=True, index=True)
    name = Column(String(255), nullable=False, index=True)
    prompt_id = Column(Integer, ForeignKey("prompts.id"), nullable=False)
    cron_expression = Column(String(100), nullable=False)
    is_active = Column(Boolean, default=True)
    created_at = Column(DateTime, server_default=func.now())
    updated_at = Column(DateTime, server_default=func.now(), onupdate=func.now())

    prompt = relationship("Prompt", back_populates="scheduled_jobs")
    executions = relationship("JobExecution", back_populates="scheduled_job")


class JobExecution(Base):
    """One run of a scheduled job (or a manual run: scheduled_job_id is NULL)."""

    __tablename__ = "job_executions"

    id = Column(Integer, primary_key=True, index=True)
    scheduled_job_id = Column(Integer, ForeignKey("scheduled_jobs.id"), nullable=True)
    session_id = Column(String(36), index=True)
    started_at = Column(DateTime, server_default=func.now())
    completed_at = Column(DateTime)
    status = Column(String(50), default="pending")
    output = Column(Text)
    error_message = Column(Text)

    scheduled_job = relationship("ScheduledJob", back_populates="executions")
