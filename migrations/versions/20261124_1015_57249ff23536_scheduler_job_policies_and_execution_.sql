-- scheduler: job policies and execution details
--
-- Revision ID: 57249ff23536
-- Revises: 34065a4cc718
-- Create Date: 2026-11-24 10:15:09.109817

-- Issue #4: per-job time zone, timeout and overlap/missed-run policies; executions record
-- their prompt (manual runs have no job, as in the original), the scheduled instant with a
-- unique key per job (the at-most-once guarantee), how they were started, the exit code,
-- whether output was cut, and the daemon's last sight of a running one (for `interrupted`).

-- migrate:upgrade
-- rebuild job_executions: add column prompt_id, foreign keys
DROP INDEX ix_job_executions_id;
DROP INDEX ix_job_executions_session_id;
PRAGMA legacy_alter_table = ON;
ALTER TABLE job_executions RENAME TO _silica_old_job_executions;
CREATE TABLE job_executions (
	id INTEGER NOT NULL, 
	scheduled_job_id INTEGER, 
	session_id VARCHAR(36), 
	started_at DATETIME DEFAULT (CURRENT_TIMESTAMP), 
	completed_at DATETIME, 
	status VARCHAR(50), 
	output TEXT, 
	error_message TEXT, 
	prompt_id INTEGER, 
	scheduled_for DATETIME, 
	trigger_kind VARCHAR(16) NOT NULL DEFAULT 'schedule', 
	exit_code INTEGER, 
	output_truncated BOOLEAN NOT NULL DEFAULT 0, 
	last_seen_at DATETIME, 
	PRIMARY KEY (id), 
	FOREIGN KEY(scheduled_job_id) REFERENCES scheduled_jobs (id), 
	FOREIGN KEY(prompt_id) REFERENCES prompts (id)
);
INSERT INTO job_executions (id, scheduled_job_id, session_id, started_at, completed_at, status, output, error_message) SELECT id, scheduled_job_id, session_id, started_at, completed_at, status, output, error_message FROM _silica_old_job_executions;
DROP TABLE _silica_old_job_executions;
PRAGMA legacy_alter_table = OFF;
CREATE INDEX ix_job_executions_id ON job_executions (id);
CREATE INDEX ix_job_executions_session_id ON job_executions (session_id);
CREATE INDEX ix_job_executions_status ON job_executions (status);
CREATE UNIQUE INDEX ux_job_executions_job_instant ON job_executions (scheduled_job_id, scheduled_for);
ALTER TABLE scheduled_jobs ADD COLUMN timezone VARCHAR(64);
ALTER TABLE scheduled_jobs ADD COLUMN timeout_seconds INTEGER;
ALTER TABLE scheduled_jobs ADD COLUMN overlap_policy VARCHAR(16) NOT NULL DEFAULT 'skip';
ALTER TABLE scheduled_jobs ADD COLUMN missed_policy VARCHAR(16) NOT NULL DEFAULT 'skip';

-- migrate:downgrade
-- WARNING: drops column(s) prompt_id, scheduled_for, trigger_kind, exit_code, output_truncated, last_seen_at of job_executions and their data
-- rebuild job_executions back: add column prompt_id, foreign keys
DROP INDEX ix_job_executions_id;
DROP INDEX ix_job_executions_session_id;
DROP INDEX ix_job_executions_status;
DROP INDEX ux_job_executions_job_instant;
PRAGMA legacy_alter_table = ON;
ALTER TABLE job_executions RENAME TO _silica_old_job_executions;
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
INSERT INTO job_executions (id, scheduled_job_id, session_id, started_at, completed_at, status, output, error_message) SELECT id, scheduled_job_id, session_id, started_at, completed_at, status, output, error_message FROM _silica_old_job_executions;
DROP TABLE _silica_old_job_executions;
PRAGMA legacy_alter_table = OFF;
CREATE INDEX ix_job_executions_id ON job_executions (id);
CREATE INDEX ix_job_executions_session_id ON job_executions (session_id);
-- WARNING: drops column scheduled_jobs.timezone and its data
ALTER TABLE scheduled_jobs DROP COLUMN timezone;
-- WARNING: drops column scheduled_jobs.timeout_seconds and its data
ALTER TABLE scheduled_jobs DROP COLUMN timeout_seconds;
-- WARNING: drops column scheduled_jobs.overlap_policy and its data
ALTER TABLE scheduled_jobs DROP COLUMN overlap_policy;
-- WARNING: drops column scheduled_jobs.missed_policy and its data
ALTER TABLE scheduled_jobs DROP COLUMN missed_policy;
