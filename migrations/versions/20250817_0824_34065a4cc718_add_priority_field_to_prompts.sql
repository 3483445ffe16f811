-- add priority field to prompts
--
-- Revision ID: 34065a4cc718
-- Revises: fc0bfa77ff5a
-- Create Date: 2025-08-17 08:24:55.246092

-- Differs from the original on purpose. The original runs
--   ALTER TABLE prompts ADD COLUMN priority INTEGER NOT NULL
-- which SQLite refuses as soon as prompts holds a row ("Cannot add a NOT NULL column with
-- default value NULL"): fresh installs pass, real upgrades fail. Here the column gets a server
-- default of the model's default, 1 (1 low, 2 medium, 3 high), so existing prompts read back 1.
-- The resulting column is the same for the original tool: INTEGER NOT NULL, and its
-- downgrade (drop the column) works on both.

-- migrate:upgrade
ALTER TABLE prompts ADD COLUMN priority INTEGER NOT NULL DEFAULT 1;

-- migrate:downgrade
ALTER TABLE prompts DROP COLUMN priority;
