-- pgtap_tests/15_schedules.sql: the cron parser and next-time computation, pgq.schedule,
-- pgq.unschedule, pgq.tick and the view pgq.schedules. The expected times below agree
-- with cronsim (Debian cron semantics); tests/test_schedules.py cross-checks the same
-- function over thousands of random pairs.
begin;
\ir _fixtures.psql
select plan(109);

-- Every schedule and job row: equal before and after a refused call.
create function pgq_test.schedules_digest()
returns text language sql
as $$
    select md5(concat_ws('|', pgq_test.state_digest(),
        (select string_agg(s::text, ',' order by s.schedule_name) from pgq.job_schedules s)))
$$;

-- The error a call raises, as 'SQLSTATE: message' (NULL when it succeeds).
create function pgq_test.error_of(query text)
returns text language plpgsql
as $$
begin
    execute query;
    return null;
exception when others then
    return sqlstate || ': ' || sqlerrm;
end;
$$;

-- The parser and next times: fixed instants, several zones, both DST changes of
-- Europe/Berlin (2026-03-29 01:00Z, 2026-10-25 01:00Z) and America/New_York
-- (2026-03-08 07:00Z, 2026-11-01 06:00Z).
create temp table next_times (cron text, timezone text, after timestamptz, expected timestamptz,
                              why text) on commit drop;
insert into next_times values
    ('* * * * *', 'UTC', '2026-01-01 00:00:00+00', '2026-01-01 00:01:00+00', 'every minute: strictly after'),
    ('*/15 * * * *', 'UTC', '2026-01-01 00:07:30+00', '2026-01-01 00:15:00+00', 'a step over the whole field'),
    ('1-30/5 * * * *', 'UTC', '2026-01-01 00:27:00+00', '2026-01-01 01:01:00+00', 'a step over a range'),
    ('5/20 * * * *', 'UTC', '2026-01-01 00:46:00+00', '2026-01-01 01:05:00+00', 'n/s runs from n to the field''s end'),
    ('5-5/20 * * * *', 'UTC', '2026-01-01 00:06:00+00', '2026-01-01 01:05:00+00', 'a-a/s is a alone, not a to the end'),
    ('5-5/1 * * * *', 'UTC', '2026-01-01 00:05:00+00', '2026-01-01 01:05:00+00', 'a-a/1 is a alone too'),
    ('0 9 * * mon-fri', 'UTC', '2026-12-04 10:00:00+00', '2026-12-07 09:00:00+00', 'a range of day names skips the weekend'),
    ('0 0 1 jan *', 'UTC', '2026-06-01 00:00:00+00', '2027-01-01 00:00:00+00', 'a month name'),
    ('0 12 13 * 5', 'UTC', '2026-02-01 00:00:00+00', '2026-02-06 12:00:00+00', 'both day fields restricted: either matches'),
    ('0 12 */2 * 5', 'UTC', '2026-02-01 00:00:00+00', '2026-02-13 12:00:00+00', 'a day field starting with *: both must match'),
    ('0 0 * * 7', 'UTC', '2026-12-01 00:00:00+00', '2026-12-06 00:00:00+00', '7 is Sunday'),
    ('0 0 * * sun', 'UTC', '2026-12-01 00:00:00+00', '2026-12-06 00:00:00+00', 'sun is Sunday'),
    ('30 4 1,15 * *', 'UTC', '2026-01-15 04:30:00+00', '2026-02-01 04:30:00+00', 'a list, from a slot itself'),
    ('0 0 29 2 *', 'UTC', '2026-03-01 00:00:00+00', '2028-02-29 00:00:00+00', 'February 29 waits for a leap year'),
    ('0 8 * JAN-MAR Mon', 'UTC', '2026-03-30 09:00:00+00', '2027-01-04 08:00:00+00', 'names in any case'),
    ('@hourly', 'UTC', '2026-01-01 10:59:59+00', '2026-01-01 11:00:00+00', '@hourly'),
    ('@daily', 'UTC', '2026-01-01 10:00:00+00', '2026-01-02 00:00:00+00', '@daily'),
    ('@midnight', 'UTC', '2026-01-01 10:00:00+00', '2026-01-02 00:00:00+00', '@midnight'),
    ('@weekly', 'UTC', '2026-12-01 10:00:00+00', '2026-12-06 00:00:00+00', '@weekly is Sunday midnight'),
    ('@monthly', 'UTC', '2026-12-01 10:00:00+00', '2027-01-01 00:00:00+00', '@monthly'),
    ('@yearly', 'UTC', '2026-12-01 10:00:00+00', '2027-01-01 00:00:00+00', '@yearly'),
    ('@annually', 'UTC', '2026-12-01 10:00:00+00', '2027-01-01 00:00:00+00', '@annually'),
    ('0 0 * * *', 'Asia/Kolkata', '2026-01-01 00:00:00+00', '2026-01-01 18:30:00+00', 'local midnight at +05:30'),
    ('0 9 * * *', 'Europe/Berlin', '2026-03-29 00:00:00+00', '2026-03-29 07:00:00+00', 'local 09:00 on the spring-forward day is CEST'),
    ('30 2 * * *', 'Europe/Berlin', '2026-03-28 12:00:00+00', '2026-03-29 01:00:00+00', 'a fixed time in the spring gap runs at the first minute after it'),
    ('30 * * * *', 'Europe/Berlin', '2026-03-29 00:30:00+00', '2026-03-29 01:30:00+00', 'an hourly slot in the spring gap is skipped'),
    ('30 2 * * *', 'Europe/Berlin', '2026-10-24 12:00:00+00', '2026-10-25 00:30:00+00', 'a fixed time in the repeated hour runs at its first pass'),
    ('30 2 * * *', 'Europe/Berlin', '2026-10-25 00:30:00+00', '2026-10-26 01:30:00+00', '... and not at its second pass'),
    ('30 * * * *', 'Europe/Berlin', '2026-10-25 00:30:00+00', '2026-10-25 01:30:00+00', 'an hourly slot runs in both passes of the repeated hour'),
    ('0 2 * * *', 'America/New_York', '2026-03-07 12:00:00+00', '2026-03-08 07:00:00+00', 'New York: 02:00 in the gap runs at 03:00 EDT'),
    ('30 1 * * *', 'America/New_York', '2026-10-31 12:00:00+00', '2026-11-01 05:30:00+00', 'New York: 01:30 runs at its first pass (EDT)'),
    ('*/30 1 * * *', 'America/New_York', '2026-11-01 05:45:00+00', '2026-11-01 06:00:00+00', 'New York: a stepped minute runs again at 01:00 EST'),
    ('30 1 * * *', 'America/New_York', '2026-11-01 06:15:00+00', '2026-11-01 05:30:00+00', 'from inside the second pass, the wall-clock slot is its first pass');

select is(pgq._cron_next(n.cron, n.timezone, n.after), n.expected,
          format('%s in %s after %s: %s', n.cron, n.timezone, n.after, n.why))
  from next_times n
 order by n.timezone, n.after, n.cron;

select is(pgq._schedule_next('30 1 * * *', 'America/New_York', '2026-11-01 06:15:00+00'),
          '2026-11-02 06:30:00+00'::timestamptz,
    'the next slot of a schedule is strictly after the instant, past a first pass already gone');
select is(pgq._schedule_latest('*/5 * * * *', 'UTC', '2025-12-01 00:00:00+00', '2026-01-01 10:07:00+00'),
          '2026-01-01 10:05:00+00'::timestamptz,
    'the latest slot at or before an instant, a month after the due slot');
select is(pgq._schedule_latest('0 0 * * *', 'UTC', '2026-01-01 00:00:00+00', '2026-01-01 10:00:00+00'),
          '2026-01-01 00:00:00+00'::timestamptz,
    'the due slot itself when no later slot has come');
select is(pgq._schedule_key('nightly', '2026-03-29 03:00:00+02'),
          'pgq:schedule:nightly:2026-03-29T01:00:00Z',
    'a slot''s idempotency key names the schedule and the slot in UTC');

-- Bad expressions: PQ001, naming the field and what it allows.
create temp table bad_crons (cron text, field text) on commit drop;
insert into bad_crons values
    ('60 * * * *', 'minute'), ('*/0 * * * *', 'minute'), ('1, * * * *', 'minute'),
    ('1/2/3 * * * *', 'minute'), ('*/x * * * *', 'minute'), ('0 24 * * *', 'hour'),
    ('0 5-3 * * *', 'hour'), ('0 0 0 * *', 'day-of-month'), ('0 0 32 * *', 'day-of-month'),
    ('0 0 30 2 *', 'day-of-month'), ('0 0 1 13 *', 'month'), ('0 0 1 mon *', 'month'),
    ('0 0 * * 8', 'day-of-week'), ('0 0 * * jan', 'day-of-week'), ('0 0 * * fri-mon', 'day-of-week'),
    ('0 0 * * L', 'day-of-week');
select ok(pgq_test.error_of(format('select pgq._cron_parse(%L)', b.cron))
          like format('PQ001: invalid cron %L: bad %s field %%', b.cron, b.field),
          format('%L is PQ001 naming the %s field', b.cron, b.field))
  from bad_crons b
 order by b.cron;
select is(pgq_test.error_of($$select pgq._cron_parse('0 0 1 13 *')$$),
    'PQ001: invalid cron ''0 0 1 13 *'': bad month field ''13'' (term ''13''): allowed are 1 to 12 or jan to dec, or *; lists (,), ranges (-) and steps (/)',
    'the message says what the field allows');
select is(pgq_test.error_of($$select pgq._cron_parse('* * * *')$$),
    'PQ001: invalid cron ''* * * *'': 4 fields, 5 expected (minute hour day-of-month month day-of-week)',
    'a wrong number of fields is PQ001 naming the five fields');
select is(pgq_test.error_of($$select pgq._cron_parse('@sometimes')$$),
    'PQ001: invalid cron ''@sometimes'': unknown shorthand: allowed are @yearly, @annually, @monthly, @weekly, @daily, @midnight and @hourly',
    'an unknown shorthand is PQ001 listing the shorthands');
select is(pgq_test.error_of($$select pgq._cron_parse(null)$$),
    'PQ001: invalid cron: must be 1 to 200 characters', 'a NULL cron is PQ001');

-- pgq.schedule creates a schedule whose next slot is after now.
select pgq.schedule('nightly', '0 3 * * *', 'report', '{"kind": "daily"}', 'reports',
                    'Europe/Berlin', 5, 2) as nightly_next \gset
select row_eq($$select s.schedule_name, s.cron, s.timezone, s.job_name, s.queue, s.payload,
                       s.priority, s.max_retries, s.next_run_at, s.last_run_at, s.last_job_id
                  from pgq.schedules s where s.schedule_name = 'nightly'$$,
    row('nightly'::text, '0 3 * * *'::text, 'Europe/Berlin'::text, 'report'::text, 'reports'::text,
        '{"kind": "daily"}'::jsonb, 5, 2, :'nightly_next'::timestamptz, null::timestamptz, null::bigint),
    'pgq.schedules shows the new schedule, not yet run');
select ok(:'nightly_next'::timestamptz > now()
          and :'nightly_next'::timestamptz <= now() + interval '1 day'
          and (:'nightly_next'::timestamptz at time zone 'Europe/Berlin')::time = '03:00',
    'the next slot is the next 03:00 in Berlin');
select is(pgq._schedule_next('0 3 * * *', 'Europe/Berlin', now()), :'nightly_next'::timestamptz,
    'pgq.schedule returns the next slot');
select is((select s.queue from pgq.queue_stats s where s.queue = 'reports'), 'reports',
    'the schedule''s queue exists from the schedule, so no tick has to create it');
select is(pgq.schedule('defaults', '@hourly', 'ping'), date_trunc('hour', now()) + interval '1 hour',
    'the defaults: UTC, queue default, payload {}');
select row_eq($$select s.timezone, s.queue, s.payload, s.priority, s.max_retries
                  from pgq.schedules s where s.schedule_name = 'defaults'$$,
    row('UTC'::text, 'default'::text, '{}'::jsonb, 0, null::integer),
    'a schedule with defaults has them in pgq.schedules');

-- Replacing: the same cron and zone keep the next slot; a new cron computes it from now.
update pgq.job_schedules set next_run_at = now() - interval '1 hour' where schedule_name = 'nightly';
select is(pgq.schedule('nightly', '0 3 * * *', 'report', '{"kind": "nightly"}', 'reports',
                       'Europe/Berlin', 5, 2),
          now() - interval '1 hour',
    'replacing a schedule with the same cron keeps its (due) next slot');
select is((select s.payload from pgq.schedules s where s.schedule_name = 'nightly'),
          '{"kind": "nightly"}'::jsonb, 'the replaced schedule has the new payload');
select is(pgq.schedule('nightly', '*/10 * * * *', 'report', '{"kind": "nightly"}', 'reports',
                       'Europe/Berlin', 5, 2),
          date_trunc('hour', now())
          + make_interval(mins => (extract(minute from now())::integer / 10 + 1) * 10),
    'replacing a schedule with a new cron computes its next slot from now');
select is((select count(*) from pgq.schedules s where s.schedule_name = 'nightly'), 1::bigint,
    'a replaced schedule is still one schedule');

-- Bad input: PQ001 naming the argument, nothing changed.
select pgq_test.schedules_digest() as before \gset
select throws_ok($$select pgq.schedule('x', '0 0 * 13 *', 'report')$$, 'PQ001',
    'invalid cron ''0 0 * 13 *'': bad month field ''13'' (term ''13''): allowed are 1 to 12 or jan to dec, or *; lists (,), ranges (-) and steps (/)',
    'schedule with a bad cron is PQ001 naming the field');
select throws_ok($$select pgq.schedule('x', '0 0 * * *', 'report', timezone => 'Mars/Olympus')$$, 'PQ001',
    'invalid timezone ''Mars/Olympus'': must be a time zone name PostgreSQL knows, such as UTC or Europe/Berlin',
    'schedule with an unknown time zone is PQ001');
select throws_ok($$select pgq.schedule('x', '0 0 * * *', 'report', timezone => null)$$, 'PQ001',
    'invalid timezone NULL: must be a time zone name PostgreSQL knows, such as UTC or Europe/Berlin',
    'schedule with a NULL time zone is PQ001');
select throws_ok($$select pgq.schedule('', '0 0 * * *', 'report')$$, 'PQ001',
    'invalid schedule_name: must be 1 to 200 characters', 'an empty schedule_name is PQ001');
select throws_ok($$select pgq.schedule(null, '0 0 * * *', 'report')$$, 'PQ001',
    'invalid schedule_name: must be 1 to 200 characters', 'a NULL schedule_name is PQ001');
select throws_ok($$select pgq.schedule('x', '0 0 * * *', repeat('j', 201))$$, 'PQ001',
    'invalid job_name: must be 1 to 200 characters', 'a job_name over 200 characters is PQ001');
select throws_ok($$select pgq.schedule('x', '0 0 * * *', 'report', '[1]')$$, 'PQ001',
    'invalid payload: must be a JSON object, not array', 'a payload that is not an object is PQ001');
select throws_ok($$select pgq.schedule('x', '0 0 * * *', 'report', null)$$, 'PQ001',
    'invalid payload: must be a JSON object, not null', 'a NULL payload is PQ001');
select throws_ok($$select pgq.schedule('x', '0 0 * * *', 'report',
                                       jsonb_build_object('blob', repeat(md5(random()::text), 70000)))$$,
    'PQ001', null, 'a payload over 1 MiB is PQ001');
select throws_ok($$select pgq.schedule('x', '0 0 * * *', 'report', queue => '')$$, 'PQ001',
    'invalid queue: must be 1 to 128 characters', 'an empty queue is PQ001');
select throws_ok($$select pgq.schedule('x', '0 0 * * *', 'report', max_retries => -1)$$, 'PQ001',
    'invalid max_retries -1: must be between 0 and 1000', 'a negative max_retries is PQ001');
select throws_ok($$select pgq.schedule('nightly', 'nonsense', 'report')$$, 'PQ001', null,
    'replacing a schedule with a bad cron is PQ001');
select is(pgq_test.schedules_digest(), :'before', 'the refused schedule calls changed nothing');

-- pgq.unschedule removes a schedule; an unknown name is PQ210 and changes nothing.
select throws_ok($$select pgq.unschedule('no-such-schedule')$$, 'PQ210',
    'schedule ''no-such-schedule'' not found', 'unschedule of an unknown name is PQ210');
select throws_ok($$select pgq.unschedule(null)$$, 'PQ210', 'schedule NULL not found',
    'unschedule of NULL is PQ210');
select is(pgq_test.schedules_digest(), :'before', 'the refused unschedule calls changed nothing');
select lives_ok($$select pgq.unschedule('defaults')$$, 'unschedule removes a schedule');
select is_empty($$select from pgq.schedules s where s.schedule_name = 'defaults'$$,
    'the removed schedule is gone from pgq.schedules');

-- pgq.tick: nothing due, nothing done.
delete from pgq.job_schedules;
select pgq.schedule('five', '*/5 * * * *', 'report', '{"n": 1}', 'ticks', 'UTC', 3, 4) as five_next \gset
select is(pgq.tick(), 0, 'tick with nothing due enqueues nothing');
select is((select count(*) from pgq.jobs), 0::bigint, '... and adds no job');

-- After downtime only the latest missed slot runs.
update pgq.job_schedules set next_run_at = :'five_next'::timestamptz - interval '3 days'
 where schedule_name = 'five';
select is(pgq.tick(), 1, 'tick after three days of downtime enqueues one job');
select is((select count(*) from pgq.jobs), 1::bigint, 'only one of the missed slots ran');
select row_eq($$select j.job_name, j.payload, j.queue, j.priority, j.max_retries, j.idempotency_key,
                       j.state
                  from pgq.jobs j$$,
    row('report'::text, '{"n": 1}'::jsonb, 'ticks'::text, 3, 4,
        pgq._schedule_key('five', :'five_next'::timestamptz - interval '5 minutes'),
        'available'::text),
    'the job is the schedule''s, keyed by the latest missed slot');
select row_eq($$select s.last_run_at, s.next_run_at, s.last_job_id, s.last_job_state
                  from pgq.schedules s where s.schedule_name = 'five'$$,
    row(:'five_next'::timestamptz - interval '5 minutes', :'five_next'::timestamptz,
        (select j.id from pgq.jobs j), 'available'::text),
    'the schedule records the slot and its job, and its next slot is after now');
select is(pgq.tick(), 0, 'a second tick finds nothing due');

-- The idempotency key is the final guarantee: a rewound schedule does not repeat a slot.
update pgq.job_schedules set next_run_at = now() - interval '1 hour' where schedule_name = 'five';
select is(pgq.tick(), 0, 'a rewound schedule does not enqueue its slot again');
select is((select count(*) from pgq.jobs), 1::bigint, '... the slot still has one job');
select is((select s.next_run_at from pgq.schedules s where s.schedule_name = 'five'),
          :'five_next'::timestamptz, '... and the schedule moves on to its next slot');

-- Several due schedules in one tick.
select pgq.schedule('a', '* * * * *', 'a-job', queue => 'qa');
select pgq.schedule('b', '0 0 * * *', 'b-job', queue => 'qb', timezone => 'America/New_York');
update pgq.job_schedules set next_run_at = now() - interval '2 days' where schedule_name in ('a', 'b');
select is(pgq.tick(), 2, 'one tick enqueues every due schedule');
select is((select j.idempotency_key from pgq.jobs j where j.job_name = 'b-job'),
          pgq._schedule_key('b', (date_trunc('day', now() at time zone 'America/New_York')
                                  at time zone 'America/New_York')),
    'a daily schedule runs its latest local midnight');

-- Who may call what.
set local role pgq_worker;
select lives_ok($$select pgq.tick()$$, 'pgq_worker can tick');
select throws_ok($$select pgq.schedule('w', '* * * * *', 'x')$$, '42501', null,
    'pgq_worker cannot schedule');
select throws_ok($$select pgq.unschedule('five')$$, '42501', null, 'pgq_worker cannot unschedule');
select throws_ok($$select * from pgq.schedules$$, '42501', null, 'pgq_worker cannot read pgq.schedules');
reset role;
set local role pgq_producer;
select throws_ok($$select pgq.tick()$$, '42501', null, 'pgq_producer cannot tick');
select throws_ok($$select pgq.schedule('p', '* * * * *', 'x')$$, '42501', null,
    'pgq_producer cannot schedule');
reset role;
set local role pgq_admin;
select lives_ok($$select pgq.schedule('admin', '@daily', 'x')$$, 'pgq_admin can schedule');
select lives_ok($$select pgq.tick()$$, 'pgq_admin can tick');
select is((select count(*) from pgq.schedules s where s.schedule_name = 'admin'), 1::bigint,
    'pgq_admin can read pgq.schedules');
select lives_ok($$select pgq.unschedule('admin')$$, 'pgq_admin can unschedule');
select throws_ok($$select pgq._cron_next('* * * * *', 'UTC', now())$$, '42501', null,
    'pgq_admin cannot call the internal next-time function');
select throws_ok($$select * from pgq.job_schedules$$, '42501', null,
    'pgq_admin cannot read pgq.job_schedules directly');
reset role;

select * from finish();
rollback;
