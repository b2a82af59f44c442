-- What a run measured (timings, accuracies, what it found) goes in its own field; params stay what the run
-- was started with (core/runs.py freezes them). resumed_at: when a process last took the run up again (its
-- pid is checked against that time, not started_at, to tell a live resumed run from a dead one).
ALTER TABLE runs ADD COLUMN metrics JSON;
ALTER TABLE runs ADD COLUMN resumed_at TIMESTAMP;
