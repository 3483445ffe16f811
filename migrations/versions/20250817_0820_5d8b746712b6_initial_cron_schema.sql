-- initial_cron_schema
--
-- Revision ID: 5d8b746712b6
-- Revises: 
-- Create Date: 2025-08-17 08:20:31.377941

-- The tables, columns, indexes and foreign keys exactly as alembic creates them from the
-- original SQLAlchemy models (statement text included), so databases move freely between
-- this tool and the original Python one.

-- migrate:upgrade
CREATE TABLE prompts (
	id INTEGER NOT NULL, 
	name VARCHAR(255) NOT NULL, 
	description TEXT, 
	prompt_text TEXT NOT NULL, 
	model VARCHAR(50) NOT NULL, 
	persona VARCHAR(50) NOT NULL, 
	created_at DATETIME DEFAULT (CURRENT_TIMESTAMP), 
	updated_at DATETIME DEFAULT (CURRENT_TIMESTAMP), 
	PRIMARY KEY (id)
);
CREATE INDEX ix_prompts_id ON prompts (id);
CREATE INDEX ix_prompts_name ON prompts (name);
CREATE TABLE scheduled_jobs (
	id INTEGER NOT NULL, 
	name VARCHAR(255) NOT NULL, 
	prompt_id INTEGER NOT NULL, 
	cron_expression VARCHAR(100) NOT NULL, 
	is_active BOOLEAN, 
	created_at DATETIME DEFAULT (CURRENT_TIMESTAMP), 
	updated_at DATETIME DEFAULT (CURRENT_TIMESTAMP), 
	PRIMARY KEY (id), 
	FOREIGN KEY(prompt_id) REFERENCES prompts (id)
);
CREATE INDEX ix_scheduled_jobs_id ON scheduled_jobs (id);
CREATE INDEX ix_scheduled_jobs_name ON scheduled_jobs (name);
CREATE TABLE job_executions (
	id INTEGER NOT NULL, 
	scheduled_job_id INTEGER, 
	session_id VARCHAR(36), 
	started_at DATETIME DEFAULT (CURRENT_TIMESTAMP), 
	completed_at DATETIME, 
	status VARCHAR(50), 
	output TEXT, 
	error_message TEXT, 
	PRIMARY KEY (id), 
	FOREIGN KEY(scheduled_job_id) REFERENCES scheduled_jobs (id)
);
CREATE INDEX ix_job_executions_id ON job_executions (id);
CREATE INDEX ix_job_executions_session_id ON job_executions (session_id);

-- migrate:downgrade
DROP INDEX ix_job_executions_session_id;
DROP INDEX ix_job_executions_id;
DROP TABLE job_executions;
DROP INDEX ix_scheduled_jobs_name;
DROP INDEX ix_scheduled_jobs_id;
DROP TABLE scheduled_jobs;
DROP INDEX ix_prompts_name;
DROP INDEX ix_prompts_id;
DROP TABLE prompts;
