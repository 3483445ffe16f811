-- The declared schema: this project's counterpart of the original's SQLAlchemy models.
-- Edit this file to change the schema, then: silica-cron migrate create "what changed"
-- (with SILICA_CRON_MIGRATIONS or --migrations-dir naming this directory). `migrate check`
-- says whether the revisions in versions/ produce exactly this.

CREATE TABLE prompts (
	id INTEGER NOT NULL, 
	name VARCHAR(255) NOT NULL, 
	description TEXT, 
	prompt_text TEXT NOT NULL, 
	model VARCHAR(50) NOT NULL, 
	persona VARCHAR(50) NOT NULL, 
	priority INTEGER NOT NULL DEFAULT 1, 
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
	timezone VARCHAR(64), 
	timeout_seconds INTEGER, 
	overlap_policy VARCHAR(16) NOT NULL DEFAULT 'skip', 
	missed_policy VARCHAR(16) NOT NULL DEFAULT 'skip', 
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
CREATE INDEX ix_job_executions_id ON job_executions (id);
CREATE INDEX ix_job_executions_session_id ON job_executions (session_id);
CREATE INDEX ix_job_executions_status ON job_executions (status);
-- At most one execution per (job, scheduled instant): written before the runner starts.
CREATE UNIQUE INDEX ux_job_executions_job_instant ON job_executions (scheduled_job_id, scheduled_for);
