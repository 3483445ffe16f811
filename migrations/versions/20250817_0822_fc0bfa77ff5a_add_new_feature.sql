-- add new feature
--
-- Revision ID: fc0bfa77ff5a
-- Revises: 5d8b746712b6
-- Create Date: 2025-08-17 08:22:40.112358

-- Empty in the original too: kept so revision ids and history match it.

-- migrate:upgrade

-- migrate:downgrade
