-- Half of the preloaded jobs finished: claimed and completed through the engine, so
-- the table holds as many succeeded jobs as available ones.
do $$
declare
    v_half integer := (select count(*) / 2 from pgq.jobs);
    v_done integer := 0;
begin
    while v_done < v_half loop
        perform pgq.complete_many(array_agg(c.id), array_agg(c.lease_token))
           from pgq.claim('bench-setup', '{bench}', least(1000, v_half - v_done)) as c;
        v_done := v_done + least(1000, v_half - v_done);
    end loop;
end;
$$;
