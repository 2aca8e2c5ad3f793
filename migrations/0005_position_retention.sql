-- Retention: drops the monthly position partitions that ended more than `keep_months` months
-- before the current month began, and deletes rows that old from the default partition (where
-- points outside every monthly partition land). Dropping a partition is instant and leaves no
-- bloat, unlike deleting its rows. It needs a brief exclusive lock on the positions table, so
-- it waits at most two seconds for it; a drop that times out is tried again next time.
CREATE FUNCTION waymark_drop_position_partitions(keep_months integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    cutoff date := (date_trunc('month', now() AT TIME ZONE 'UTC')
                    - make_interval(months => keep_months))::date;
    part record;
    dropped integer := 0;
BEGIN
    IF keep_months < 1 THEN
        RAISE EXCEPTION 'keep_months must be at least 1, not %', keep_months;
    END IF;
    PERFORM set_config('lock_timeout', '2s', true);
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'positions'::regclass AND c.relname ~ '^positions_[0-9]{4}_[0-9]{2}$'
    LOOP
        -- A partition positions_YYYY_MM holds that month; it ends when the next one begins.
        IF (to_date(substring(part.relname FROM 11), 'YYYY_MM') + interval '1 month')::date <= cutoff THEN
            EXECUTE format('DROP TABLE %I', part.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    DELETE FROM positions_default WHERE recorded_at < cutoff::timestamp AT TIME ZONE 'UTC';
    RETURN dropped;
END;
$$;
