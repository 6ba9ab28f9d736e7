-- Schedules: periodic jobs, enqueued by pgq.tick at each slot of a cron expression
-- in a time zone. No leader: any number of workers (or pg_cron) call pgq.tick; a
-- due schedule is locked by one tick and skipped by the others, and each slot's job
-- carries the idempotency key pgq:schedule:<name>:<slot in UTC>, so a slot is
-- enqueued once even if a schedule is rewound. After downtime only the latest
-- missed slot runs.
--
-- Cron: five fields, minute (0-59) hour (0-23) day-of-month (1-31) month (1-12 or
-- jan-dec) day-of-week (0-7 or sun-sat, 0 and 7 are Sunday); each field a list of
-- terms, a term `*`, `n`, `a-b`, `*/s`, `a-b/s` or `n/s` (n to the field's end in
-- steps of s; `a-a/s` is a alone). Names and shorthands are case-insensitive. Shorthands: @yearly and
-- @annually (0 0 1 1 *), @monthly (0 0 1 * *), @weekly (0 0 * * 0), @daily and
-- @midnight (0 0 * * *), @hourly (0 * * * *). When day-of-month and day-of-week
-- both are restricted (neither starts with `*`), a day matches if either matches;
-- otherwise both must. Not supported: a seconds field, L, W, # and ?.
--
-- Time zones and DST follow Debian cron (as cronsim implements it, which the tests
-- cross-check): an expression whose minute and hour fields are both fixed (neither
-- starts with `*`) runs at local wall-clock times. A slot that falls in a
-- spring-forward gap runs at the first minute after the gap; a slot in a fall-back
-- hour runs once, at its first occurrence. Any other expression (`*` or `*/s` in the
-- minute or hour) runs at every instant whose local time matches, so an hourly
-- job runs in both passes of a repeated hour and not in a skipped one.

-- Internal: the sorted values of one cron field. `field` names it in errors, lo..hi
-- is its range, names (if any) stand for lo, lo + 1, ... Refuses with PQ001 naming
-- the field, the bad term and what is allowed.
create or replace function pgq._cron_field(cron text, field text, spec text, lo integer,
                                           hi integer, names text[] default null)
returns integer[]
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_term   text;
    v_bounds text[];
    v_step   text;
    v_from   integer;
    v_to     integer;
    v_by     integer;
    v_i      integer;
    v_ok     boolean;
    v_set    boolean[];
    v_values integer[] := '{}';
begin
    -- Plain assignments and loops only (no queries): parsing is on every tick's path.
    v_set := array_fill(false, array[_cron_field.hi - _cron_field.lo + 1], array[_cron_field.lo]);
    foreach v_term in array string_to_array(_cron_field.spec, ',') loop
        v_step := case when strpos(v_term, '/') > 0 then substr(v_term, strpos(v_term, '/') + 1) end;
        v_bounds := string_to_array(split_part(v_term, '/', 1), '-');
        v_ok := true;
        -- The base of a term: *, a range a-b, or one value n.
        if v_bounds = array['*'] then
            v_from := _cron_field.lo;
            v_to := _cron_field.hi;
        elsif cardinality(v_bounds) between 1 and 2 then
            for v_i in 1 .. cardinality(v_bounds) loop
                if v_bounds[v_i] ~ '^[0-9]{1,9}$'
                   and v_bounds[v_i]::integer between _cron_field.lo and _cron_field.hi then
                    v_bounds[v_i] := v_bounds[v_i]::integer;
                elsif array_position(_cron_field.names, v_bounds[v_i]) is not null then
                    v_bounds[v_i] := array_position(_cron_field.names, v_bounds[v_i]) - 1 + _cron_field.lo;
                else
                    v_ok := false;
                end if;
            end loop;
            if v_ok then
                v_from := v_bounds[1]::integer;
                v_to := v_bounds[cardinality(v_bounds)]::integer;
                v_ok := v_to >= v_from;
            end if;
        else
            v_ok := false;
        end if;
        -- A step takes every s-th value of the base; one value n means n to the end
        -- (a range a-a stays the one value a, as in Debian cron).
        v_by := 1;
        if v_ok and v_step is not null then
            v_ok := v_step ~ '^[0-9]{1,9}$' and v_step::integer > 0;
            if v_ok then
                v_by := v_step::integer;
                if cardinality(v_bounds) = 1 and v_bounds <> array['*'] then
                    v_to := _cron_field.hi;
                end if;
            end if;
        end if;
        if not v_ok then
            raise exception using errcode = 'PQ001',
                message = format('invalid cron %L: bad %s field %L (term %L): allowed are %s to %s%s, or *; lists (,), ranges (-) and steps (/)',
                                 _cron_field.cron, _cron_field.field, _cron_field.spec, v_term,
                                 _cron_field.lo, _cron_field.hi,
                                 case when _cron_field.names is null then ''
                                      else format(' or %s to %s', _cron_field.names[1],
                                                  _cron_field.names[cardinality(_cron_field.names)]) end),
                hint = 'Five fields: minute hour day-of-month month day-of-week, or a shorthand such as @daily.';
        end if;
        for v_i in v_from .. v_to by v_by loop
            v_set[v_i] := true;
        end loop;
    end loop;
    for v_i in _cron_field.lo .. _cron_field.hi loop
        if v_set[v_i] then
            v_values := v_values || v_i;
        end if;
    end loop;
    return v_values;
end;
$$;
comment on function pgq._cron_field(text, text, text, integer, integer, text[]) is
    'Internal: the sorted values of one cron field; PQ001 naming the field when it is malformed.';

-- Internal: a cron expression parsed. weekdays uses 0 for Sunday; day_and says both
-- day fields must match (one of them starts with *); wall_clock says the minute and
-- hour are fixed, so slots are local wall-clock times (see the model above).
create or replace function pgq._cron_parse(cron text, out minutes integer[], out hours integer[],
                                           out days integer[], out months integer[],
                                           out weekdays integer[], out day_and boolean,
                                           out wall_clock boolean)
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_expr   text;
    v_fields text[];
begin
    if _cron_parse.cron is null or length(_cron_parse.cron) not between 1 and 200 then
        raise exception using errcode = 'PQ001',
            message = 'invalid cron: must be 1 to 200 characters',
            hint = 'Five fields: minute hour day-of-month month day-of-week, or a shorthand such as @daily.';
    end if;
    v_expr := regexp_replace(lower(_cron_parse.cron), '^\s+|\s+$', '', 'g');
    if v_expr like '@%' then
        v_expr := case v_expr
                  when '@yearly' then '0 0 1 1 *'
                  when '@annually' then '0 0 1 1 *'
                  when '@monthly' then '0 0 1 * *'
                  when '@weekly' then '0 0 * * 0'
                  when '@daily' then '0 0 * * *'
                  when '@midnight' then '0 0 * * *'
                  when '@hourly' then '0 * * * *'
                  end;
        if v_expr is null then
            raise exception using errcode = 'PQ001',
                message = format('invalid cron %L: unknown shorthand: allowed are @yearly, @annually, @monthly, @weekly, @daily, @midnight and @hourly',
                                 _cron_parse.cron);
        end if;
    end if;
    v_fields := regexp_split_to_array(v_expr, '\s+');
    if cardinality(v_fields) <> 5 then
        raise exception using errcode = 'PQ001',
            message = format('invalid cron %L: %s fields, 5 expected (minute hour day-of-month month day-of-week)',
                             _cron_parse.cron, cardinality(v_fields)),
            hint = 'Or a shorthand: @yearly, @monthly, @weekly, @daily or @hourly.';
    end if;
    minutes := pgq._cron_field(_cron_parse.cron, 'minute', v_fields[1], 0, 59);
    hours := pgq._cron_field(_cron_parse.cron, 'hour', v_fields[2], 0, 23);
    days := pgq._cron_field(_cron_parse.cron, 'day-of-month', v_fields[3], 1, 31);
    months := pgq._cron_field(_cron_parse.cron, 'month', v_fields[4], 1, 12,
        array['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec']);
    weekdays := pgq._cron_field(_cron_parse.cron, 'day-of-week', v_fields[5], 0, 7,
                                array['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat']);
    if weekdays[cardinality(weekdays)] = 7 then
        -- 7 is Sunday, as 0 is.
        weekdays := case when weekdays[1] = 0 then weekdays[1:cardinality(weekdays) - 1]
                         else 0 || weekdays[1:cardinality(weekdays) - 1] end;
    end if;
    day_and := v_fields[3] like '*%' or v_fields[5] like '*%';
    wall_clock := v_fields[1] not like '*%' and v_fields[2] not like '*%';
    -- Only day-of-month can make an expression that never matches (30 2 ...).
    if day_and and days[1] > (case when months && array[1, 3, 5, 7, 8, 10, 12] then 31
                                   when months && array[4, 6, 9, 11] then 30 else 29 end) then
        raise exception using errcode = 'PQ001',
            message = format('invalid cron %L: bad day-of-month field %L: no month it names has day %s',
                             _cron_parse.cron, v_fields[3], days[1]);
    end if;
end;
$$;
comment on function pgq._cron_parse(text) is
    'Internal: parse a 5-field cron expression or shorthand; PQ001 naming the bad field.';

-- Internal: the first whole minute after `after`, in naive local time, whose fields
-- match. Months are skipped whole, then days, so a rare expression costs little.
-- NULL if nothing matches within 50 years.
create or replace function pgq._cron_next_wall(minutes integer[], hours integer[], days integer[],
                                               months integer[], weekdays integer[],
                                               day_and boolean, after timestamp)
returns timestamp
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_start  timestamp := date_trunc('minute', _cron_next_wall.after) + interval '1 minute';
    v_year   integer := extract(year from v_start);
    v_month  integer := extract(month from v_start);
    v_first  boolean := true;
    v_day    integer;
    v_today  boolean;
    v_hour   integer;
    v_minute integer;
    v_dom    boolean;
    v_dow    boolean;
begin
    while v_year <= extract(year from v_start) + 50 loop
        if v_month = any (_cron_next_wall.months) then
            for v_day in (case when v_first then extract(day from v_start)::integer else 1 end)
                         .. extract(day from make_date(v_year, v_month, 1)
                                         + interval '1 month - 1 day')::integer loop
                v_dom := v_day = any (_cron_next_wall.days);
                v_dow := extract(dow from make_date(v_year, v_month, v_day))::integer
                         = any (_cron_next_wall.weekdays);
                if (_cron_next_wall.day_and and v_dom and v_dow)
                   or (not _cron_next_wall.day_and and (v_dom or v_dow)) then
                    v_today := v_first and v_day = extract(day from v_start);
                    foreach v_hour in array _cron_next_wall.hours loop
                        continue when v_today and v_hour < extract(hour from v_start);
                        foreach v_minute in array _cron_next_wall.minutes loop
                            if not (v_today and v_hour = extract(hour from v_start))
                               or v_minute >= extract(minute from v_start) then
                                return make_timestamp(v_year, v_month, v_day, v_hour, v_minute, 0);
                            end if;
                        end loop;
                    end loop;
                end if;
            end loop;
        end if;
        v_first := false;
        v_month := v_month + 1;
        if v_month > 12 then
            v_month := 1;
            v_year := v_year + 1;
        end if;
    end loop;
    return null;
end;
$$;
comment on function pgq._cron_next_wall(integer[], integer[], integer[], integer[], integer[], boolean, timestamp) is
    'Internal: the first whole minute after a naive local time that matches parsed cron fields.';

-- Internal: the earliest instant after `after` (any, when NULL) whose local time in
-- `timezone` is `wall`; NULL when the wall time does not exist (a DST gap).
create or replace function pgq._cron_instant(wall timestamp, timezone text, after timestamptz)
returns timestamptz
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_guess timestamptz := _cron_instant.wall at time zone _cron_instant.timezone;
begin
    -- The offsets in force near the guess cover both readings of a repeated hour.
    return (select min(c.at)
              from (select (_cron_instant.wall at time zone 'UTC')
                           - ((g.at at time zone _cron_instant.timezone) - (g.at at time zone 'UTC'))
                           as at
                      from unnest(array[v_guess, v_guess - interval '3 hours',
                                        v_guess + interval '3 hours']) as g(at)) as c
             where (c.at at time zone _cron_instant.timezone) = _cron_instant.wall
               and (_cron_instant.after is null or c.at > _cron_instant.after));
end;
$$;
comment on function pgq._cron_instant(timestamp, text, timestamptz) is
    'Internal: the earliest instant after a bound with a given local time in a zone; NULL in a DST gap.';

-- Internal: the next slot of `cron` in `timezone` after `after`, exactly as Debian
-- cron (and cronsim) computes it: see the model at the top of this file. A
-- wall-clock slot read from inside a repeated hour can be its first pass, before
-- `after`; pgq._schedule_next steps past it.
create or replace function pgq._cron_next(cron text, timezone text, after timestamptz)
returns timestamptz
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_cron   record;
    v_wall   timestamp;
    v_at     timestamptz;
    v_off    interval;
    v_base   timestamptz;
    v_lo     integer;
    v_hi     integer;
    v_mid    integer;
    v_switch timestamptz;
    v_second timestamptz;
begin
    select * into v_cron from pgq._cron_parse(_cron_next.cron);
    v_wall := pgq._cron_next_wall(v_cron.minutes, v_cron.hours, v_cron.days, v_cron.months,
                                  v_cron.weekdays, v_cron.day_and,
                                  _cron_next.after at time zone _cron_next.timezone);
    if v_cron.wall_clock then
        -- Wall-clock time: the first reading of a repeated time, the first minute
        -- that exists after a gap.
        loop
            exit when v_wall is null;
            v_at := pgq._cron_instant(v_wall, _cron_next.timezone, null);
            exit when v_at is not null;
            v_wall := v_wall + interval '1 minute';
        end loop;
        return v_at;
    end if;

    -- Every matching instant: the first matching local time that exists after
    -- `after`, at its first reading after `after` ...
    loop
        exit when v_wall is null;
        v_at := pgq._cron_instant(v_wall, _cron_next.timezone, _cron_next.after);
        exit when v_at is not null;
        v_wall := pgq._cron_next_wall(v_cron.minutes, v_cron.hours, v_cron.days, v_cron.months,
                                      v_cron.weekdays, v_cron.day_and, v_wall);
    end loop;
    -- ... unless the clock falls back within 3 hours: then the repeated local times
    -- come round again, and one of them may match sooner.
    v_off := (_cron_next.after at time zone _cron_next.timezone)
             - (_cron_next.after at time zone 'UTC');
    if ((_cron_next.after + interval '3 hours') at time zone _cron_next.timezone)
       - ((_cron_next.after + interval '3 hours') at time zone 'UTC') < v_off then
        -- The instant of the change, to the second.
        v_base := date_trunc('second', _cron_next.after);
        v_lo := 0;
        v_hi := 10801;
        while v_hi - v_lo > 1 loop
            v_mid := (v_lo + v_hi) / 2;
            if ((v_base + make_interval(secs => v_mid)) at time zone _cron_next.timezone)
               - ((v_base + make_interval(secs => v_mid)) at time zone 'UTC') = v_off then
                v_lo := v_mid;
            else
                v_hi := v_mid;
            end if;
        end loop;
        v_switch := v_base + make_interval(secs => v_hi);
        v_wall := pgq._cron_next_wall(v_cron.minutes, v_cron.hours, v_cron.days, v_cron.months,
                                      v_cron.weekdays, v_cron.day_and,
                                      (v_switch at time zone _cron_next.timezone)
                                      - interval '1 microsecond');
        v_second := (v_wall at time zone 'UTC')
                    - ((v_switch at time zone _cron_next.timezone) - (v_switch at time zone 'UTC'));
        if (v_second at time zone _cron_next.timezone) = v_wall then
            v_at := least(v_at, v_second);
        end if;
    end if;
    return v_at;
end;
$$;
comment on function pgq._cron_next(text, text, timestamptz) is
    'Internal: the next slot of a cron expression in a time zone after an instant (Debian cron semantics).';

-- Internal: the next slot strictly after `after`; NULL if there is none in 50 years.
create or replace function pgq._schedule_next(cron text, timezone text, after timestamptz)
returns timestamptz
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_at timestamptz := _schedule_next.after;
begin
    loop
        v_at := pgq._cron_next(_schedule_next.cron, _schedule_next.timezone, v_at);
        exit when v_at is null or v_at > _schedule_next.after;
    end loop;
    return v_at;
end;
$$;
comment on function pgq._schedule_next(text, text, timestamptz) is
    'Internal: the next slot of a cron expression strictly after an instant.';

-- Internal: the latest slot at or before `until`, given that `due` (a slot) is at or
-- before it: the one slot a tick runs after downtime. Searches back from `until` in
-- doubling windows, then bisects, so a long downtime costs a few dozen steps.
create or replace function pgq._schedule_latest(cron text, timezone text, due timestamptz,
                                                until timestamptz)
returns timestamptz
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_window interval := interval '1 minute';
    v_lo     timestamptz;
    v_hi     timestamptz := _schedule_latest.until;
    v_mid    timestamptz;
    v_slot   timestamptz;
    v_next   timestamptz;
begin
    -- Ticks that keep up find one due slot: no search.
    if pgq._schedule_next(_schedule_latest.cron, _schedule_latest.timezone, _schedule_latest.due)
       > _schedule_latest.until then
        return _schedule_latest.due;
    end if;
    -- v_lo: a bound with a slot in (v_lo, until]; v_hi: one without.
    loop
        if _schedule_latest.until - v_window <= _schedule_latest.due then
            v_lo := null;
            exit;
        end if;
        v_lo := _schedule_latest.until - v_window;
        exit when pgq._schedule_next(_schedule_latest.cron, _schedule_latest.timezone, v_lo)
                  <= _schedule_latest.until;
        v_hi := v_lo;
        v_window := v_window * 2;
    end loop;
    if v_lo is null then
        v_slot := _schedule_latest.due;
    else
        while v_hi - v_lo > interval '1 minute' loop
            v_mid := v_lo + (v_hi - v_lo) / 2;
            if pgq._schedule_next(_schedule_latest.cron, _schedule_latest.timezone, v_mid)
               <= _schedule_latest.until then
                v_lo := v_mid;
            else
                v_hi := v_mid;
            end if;
        end loop;
        v_slot := pgq._schedule_next(_schedule_latest.cron, _schedule_latest.timezone, v_lo);
    end if;
    loop
        v_next := pgq._schedule_next(_schedule_latest.cron, _schedule_latest.timezone, v_slot);
        exit when v_next is null or v_next > _schedule_latest.until;
        v_slot := v_next;
    end loop;
    return v_slot;
end;
$$;
comment on function pgq._schedule_latest(text, text, timestamptz, timestamptz) is
    'Internal: the latest slot of a cron expression at or before an instant (the one run after downtime).';

-- Internal: the idempotency key of a schedule's job for one slot; the slot in UTC,
-- so the key does not depend on the session's TimeZone or DateStyle.
create or replace function pgq._schedule_key(schedule_name text, slot timestamptz)
returns text
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
begin
    return 'pgq:schedule:' || _schedule_key.schedule_name || ':'
           || to_char(_schedule_key.slot at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"');
end;
$$;
comment on function pgq._schedule_key(text, timestamptz) is
    'Internal: the idempotency key pgq:schedule:<name>:<slot in UTC> of a schedule''s job.';

-- Create or replace a schedule: at each slot of `cron` in `timezone`, pgq.tick
-- enqueues job_name with payload in queue (which exists from now on, as after
-- its first job). Returns the next slot. A replaced
-- schedule keeps its next slot when cron and timezone are unchanged, and otherwise
-- computes it from now. Bad input is PQ001 and changes nothing.
create or replace function pgq.schedule(schedule_name text, cron text, job_name text,
                                        payload jsonb default '{}',
                                        queue text default 'default',
                                        timezone text default 'UTC',
                                        priority integer default 0,
                                        max_retries integer default null)
returns timestamptz
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_next timestamptz;
begin
    if schedule.schedule_name is null or length(schedule.schedule_name) not between 1 and 200 then
        raise exception using errcode = 'PQ001',
            message = 'invalid schedule_name: must be 1 to 200 characters';
    end if;
    -- pg_timezone_names reads every zone (tens of milliseconds): a zone some
    -- schedule uses already is known to be good.
    if schedule.timezone is null
       or not (schedule.timezone = 'UTC'
               or exists (select from pgq.job_schedules s where s.timezone = schedule.timezone)
               or exists (select from pg_catalog.pg_timezone_names z
                           where z.name = schedule.timezone)) then
        raise exception using errcode = 'PQ001',
            message = format('invalid timezone %L: must be a time zone name PostgreSQL knows, such as UTC or Europe/Berlin',
                             schedule.timezone),
            hint = 'pg_timezone_names lists them.';
    end if;
    if schedule.job_name is null or length(schedule.job_name) not between 1 and 200 then
        raise exception using errcode = 'PQ001',
            message = 'invalid job_name: must be 1 to 200 characters';
    end if;
    if schedule.payload is null or jsonb_typeof(schedule.payload) <> 'object' then
        raise exception using errcode = 'PQ001',
            message = format('invalid payload: must be a JSON object, not %s',
                             coalesce(jsonb_typeof(schedule.payload), 'null')),
            hint = 'Pass ''{}'' for a job without arguments.';
    end if;
    if pg_column_size(schedule.payload) > 1048576 then
        raise exception using errcode = 'PQ001',
            message = format('invalid payload: %s bytes, at most 1048576 allowed',
                             pg_column_size(schedule.payload));
    end if;
    if schedule.queue is null or length(schedule.queue) not between 1 and 128 then
        raise exception using errcode = 'PQ001',
            message = 'invalid queue: must be 1 to 128 characters';
    end if;
    if schedule.max_retries not between 0 and 1000 then
        raise exception using errcode = 'PQ001',
            message = format('invalid max_retries %s: must be between 0 and 1000', schedule.max_retries);
    end if;
    v_next := pgq._schedule_next(schedule.cron, schedule.timezone, now());
    if v_next is null then
        raise exception using errcode = 'PQ001',
            message = format('invalid cron %L: it matches no time in the next 50 years', schedule.cron);
    end if;

    -- The queue exists from its schedule, so no tick inserts it: a tick enqueueing the
    -- first job of a new queue would make concurrent ticks wait for its commit.
    insert into pgq.queues as q (queue) values (schedule.queue)
    on conflict on constraint queues_pkey do nothing;

    insert into pgq.job_schedules as s (schedule_name, cron, timezone, job_name, payload, queue,
                                        priority, max_retries, next_run_at)
    values (schedule.schedule_name, schedule.cron, schedule.timezone, schedule.job_name,
            schedule.payload, schedule.queue, coalesce(schedule.priority, 0), schedule.max_retries,
            v_next)
    on conflict on constraint job_schedules_pkey do update
       set cron = excluded.cron,
           timezone = excluded.timezone,
           job_name = excluded.job_name,
           payload = excluded.payload,
           queue = excluded.queue,
           priority = excluded.priority,
           max_retries = excluded.max_retries,
           next_run_at = case when s.cron = excluded.cron and s.timezone = excluded.timezone
                              then s.next_run_at else excluded.next_run_at end,
           updated_at = now()
    returning s.next_run_at into v_next;
    return v_next;
end;
$$;
comment on function pgq.schedule(text, text, text, jsonb, text, text, integer, integer) is
    'Create or replace a periodic schedule; returns its next slot. PQ001 on a bad cron, time zone or job.';

-- Remove a schedule; its jobs already enqueued stay. PQ210 for an unknown name.
create or replace function pgq.unschedule(schedule_name text)
returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
begin
    delete from pgq.job_schedules s where s.schedule_name = unschedule.schedule_name;
    if not found then
        raise exception using errcode = 'PQ210',
            message = format('schedule %L not found', unschedule.schedule_name),
            hint = 'pgq.schedules lists the schedules.';
    end if;
end;
$$;
comment on function pgq.unschedule(text) is
    'Remove a schedule (its enqueued jobs stay); PQ210 (schedule_not_found) for an unknown name.';

-- Enqueue the due slot of every due schedule; returns how many jobs it enqueued.
-- A schedule another tick holds is skipped, never waited for; after downtime only
-- the latest missed slot is enqueued. Cheap when nothing is due: one index probe.
create or replace function pgq.tick()
returns integer
language plpgsql security definer
set search_path = pg_catalog, pg_temp set enable_seqscan = off set jit = off
as $$
declare
    v_due   record;
    v_slot  timestamptz;
    v_key   text;
    v_new   boolean;
    v_job   bigint;
    v_count integer := 0;
begin
    for v_due in
        select s.schedule_name, s.cron, s.timezone, s.job_name, s.payload, s.queue, s.priority,
               s.max_retries, s.next_run_at
          from pgq.job_schedules s
         where s.next_run_at <= now()
         order by s.next_run_at
           for update skip locked
    loop
        v_slot := pgq._schedule_latest(v_due.cron, v_due.timezone, v_due.next_run_at, now());
        v_key := pgq._schedule_key(v_due.schedule_name, v_slot);
        -- The row lock makes this tick the slot's only enqueuer; the key is the final
        -- guarantee (a rewound or re-created schedule finds the slot's job).
        v_new := not exists (select from pgq.jobs j where j.idempotency_key = v_key);
        v_job := pgq.enqueue(job_name => v_due.job_name, payload => v_due.payload,
                             queue => v_due.queue, priority => v_due.priority,
                             max_retries => v_due.max_retries, idempotency_key => v_key);
        update pgq.job_schedules s
           set next_run_at = pgq._schedule_next(v_due.cron, v_due.timezone, v_slot),
               last_run_at = v_slot,
               last_job_id = v_job,
               updated_at = now()
         where s.schedule_name = v_due.schedule_name;
        if v_new then
            v_count := v_count + 1;
        end if;
    end loop;
    return v_count;
end;
$$;
comment on function pgq.tick() is
    'Enqueue the latest due slot of every due schedule (skipping those another tick holds); returns the count.';
