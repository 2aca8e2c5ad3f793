-- What each device's clock usually shows: seconds its live fixes are stamped ahead of their
-- arrival (negative: behind, the network's delay). A fix stamped well ahead of this is marked
-- `clock_ahead` and never becomes current. NULL: nothing learnt yet, the server clock is the rule.
ALTER TABLE vehicles ADD COLUMN clock_offset_s double precision;
