-- What a run measured (timings, accuracies, counts found) goes in its own field; params stay what the run
-- was started with (core/runs.py freezes them).
ALTER TABLE runs ADD COLUMN metrics JSON;
