-- Turns carry tool calls, tool results and reasoning as structured data (issue 12): four optional fields
-- per turn (NULL in rows loaded before), the sample's function definitions, and KTO's desirable/undesirable
-- label as a first-class column. ALTER ... TYPE keeps each column's compression (0009) and fills the new
-- struct fields with NULL.
ALTER TABLE samples ALTER messages TYPE
    STRUCT(role VARCHAR, content VARCHAR, reasoning VARCHAR, tool_calls JSON, tool_call_id VARCHAR, name VARCHAR)[];
ALTER TABLE samples ALTER rejected TYPE
    STRUCT(role VARCHAR, content VARCHAR, reasoning VARCHAR, tool_calls JSON, tool_call_id VARCHAR, name VARCHAR)[];
ALTER TABLE samples ADD COLUMN tools JSON;       -- function definitions offered to the model: a list
ALTER TABLE samples ADD COLUMN kto_label BOOLEAN; -- KTO: true = desirable, false = undesirable
