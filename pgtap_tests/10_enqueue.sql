-- pgtap_tests/10_enqueue.sql: enqueue and enqueue_many. The NOTIFY that wakes
-- workers is delivered at commit, so it is tested from Python.
begin;
\ir _fixtures.psql
select plan(134);
select pgq_test.fresh_queue('enq') as q \gset
select pgq_test.fresh_queue('enq2') as q2 \gset
select pgq_test.fresh_queue('bad') as q_bad \gset
select pgq_test.fresh_queue('key') as key \gset

-- enqueue with only a job name: every default.
select pgq.enqueue('defaults') as job_id \gset
select is((pgq_test.job(:job_id)).queue, 'default', 'the queue defaults to ''default''');
select is((pgq_test.job(:job_id)).payload, '{}'::jsonb, 'the payload defaults to {}');
select is((pgq_test.job(:job_id)).state, 'available', 'a new job is available');
select is((pgq_test.job(:job_id)).attempt, 0, 'a new job has attempt 0');
select is((pgq_test.job(:job_id)).priority, 0, 'the priority defaults to 0');
select is((pgq_test.job(:job_id)).run_at, now(), 'run_at defaults to now()');
select is((pgq_test.job(:job_id)).max_retries, (pgq_test.queue_settings('default')).max_retries,
    'max_retries defaults to the queue''s setting');
select is((pgq_test.job(:job_id)).max_retries, 5, 'an unconfigured queue''s max_retries is 5');
select ok((pgq_test.job(:job_id)).idempotency_key is null
          and (pgq_test.job(:job_id)).lease_token is null
          and (pgq_test.job(:job_id)).worker_id is null
          and (pgq_test.job(:job_id)).last_error is null,
    'a new job has no idempotency key, lease, worker or error');

-- The first enqueue creates the queue, with the default settings.
select is(pgq_test.queue_settings(:'q') is null, true, 'a fresh queue does not exist before its first job');
select pgq.enqueue('first', '{"to": "a@example.com"}', :'q') as job_id \gset
select row_eq(format($$select s.queue, s.max_retries, s.lease, s.paused
                         from pgq_test.queue_settings(%L) s$$, :'q'),
    row(:'q'::text, 5, interval '30 seconds', false),
    'the first enqueue creates the queue with the default settings');
select is((pgq_test.job(:job_id)).payload, '{"to": "a@example.com"}'::jsonb, 'the payload is stored');
select is((pgq_test.job(:job_id)).job_name, 'first', 'the job name is stored');

-- Every argument is honoured.
select pgq.enqueue('later', '{}', :'q', now() + interval '1 hour', -3, 9) as job_id \gset
select row_eq(format($$select j.queue, j.run_at, j.priority, j.max_retries from pgq.jobs j where j.id = %s$$, :job_id),
    row(:'q'::text, now() + interval '1 hour', -3, 9),
    'queue, run_at, priority and max_retries are stored as given');
select pgq.enqueue('past', '{}', :'q', now() - interval '1 hour') as job_id \gset
select is((pgq_test.job(:job_id)).run_at, now() - interval '1 hour', 'a run_at in the past is kept');
select pgq.enqueue('zero', '{}', :'q', max_retries => 0) as job_id \gset
select is((pgq_test.job(:job_id)).max_retries, 0, 'max_retries 0 is accepted (one run, no retry)');
select pgq.enqueue('no-priority', '{}', :'q', priority => null) as job_id \gset
select is((pgq_test.job(:job_id)).priority, 0, 'a NULL priority takes 0');
select pgq.configure_queue(:'q2', max_retries => 2) as configured \gset
select pgq.enqueue('configured', '{}', :'q2') as job_id \gset
select is((pgq_test.job(:job_id)).max_retries, 2, 'max_retries defaults to the configured queue''s setting');
select lives_ok(format($$select pgq.enqueue(%L, '{}', %L)$$, repeat('n', 200), :'q'),
    'a job name of 200 characters is accepted');
select lives_ok(format($$select pgq.enqueue('big', (select jsonb_build_object('x', string_agg(md5(i::text), ''))
                                                      from generate_series(1, 31000) as i), %L)$$, :'q'),
    'a payload just under 1 MiB is accepted');
select lives_ok(format($$select pgq.enqueue('long-key', '{}', %L, idempotency_key => %L)$$, :'q', repeat('k', 512)),
    'an idempotency key of 512 characters is accepted');

-- Every bad input: PQ001, and nothing inserted (nor the queue created).
select pgq_test.state_digest() as before \gset
select throws_ok($$select pgq.enqueue('')$$, 'PQ001', null, 'an empty job name is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused empty job name inserts nothing');
select throws_ok(format('select pgq.enqueue(%L)', repeat('n', 201)), 'PQ001', null,
    'a job name of 201 characters is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused oversized job name inserts nothing');
select throws_ok($$select pgq.enqueue(null)$$, 'PQ001', null, 'a NULL job name is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused NULL job name inserts nothing');
select throws_ok(format($$select pgq.enqueue('j', '[]', %L)$$, :'q_bad'), 'PQ001', null,
    'an array payload is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused array payload inserts nothing');
select throws_ok(format($$select pgq.enqueue('j', '1', %L)$$, :'q_bad'), 'PQ001', null,
    'a number payload is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused number payload inserts nothing');
select throws_ok(format($$select pgq.enqueue('j', 'null'::jsonb, %L)$$, :'q_bad'), 'PQ001', null,
    'a JSON null payload is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused JSON null payload inserts nothing');
select throws_ok(format($$select pgq.enqueue('j', '"text"', %L)$$, :'q_bad'), 'PQ001', null,
    'a string payload is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused string payload inserts nothing');
select throws_ok(format($$select pgq.enqueue('j', null, %L)$$, :'q_bad'), 'PQ001', null,
    'a NULL payload is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused NULL payload inserts nothing');
select throws_ok(format($$select pgq.enqueue('j', (select jsonb_build_object('x', string_agg(md5(i::text), ''))
                                                      from generate_series(1, 35000) as i), %L)$$, :'q_bad'),
    'PQ001', null, 'a payload over 1 MiB is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused oversized payload inserts nothing');
select throws_ok($$select pgq.enqueue('j', '{}', '')$$, 'PQ001', null,
    'an empty queue name is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused empty queue name inserts nothing');
select throws_ok(format($$select pgq.enqueue('j', '{}', %L)$$, repeat('q', 129)), 'PQ001', null,
    'a queue name of 129 characters is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused oversized queue name inserts nothing');
select throws_ok($$select pgq.enqueue('j', '{}', null)$$, 'PQ001', null,
    'a NULL queue is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused NULL queue inserts nothing');
select throws_ok(format($$select pgq.enqueue('j', '{}', %L, max_retries => -1)$$, :'q_bad'), 'PQ001', null,
    'a negative max_retries is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused negative max_retries inserts nothing');
select throws_ok(format($$select pgq.enqueue('j', '{}', %L, max_retries => 1001)$$, :'q_bad'), 'PQ001', null,
    'max_retries above 1000 is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused max_retries above 1000 inserts nothing');
select throws_ok(format($$select pgq.enqueue('j', '{}', %L, idempotency_key => '')$$, :'q_bad'), 'PQ001', null,
    'an empty idempotency key is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused empty idempotency key inserts nothing');
select throws_ok(format($$select pgq.enqueue('j', '{}', %L, idempotency_key => %L)$$, :'q_bad', repeat('k', 513)),
    'PQ001', null, 'an idempotency key of 513 characters is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused oversized idempotency key inserts nothing');

-- Idempotency: the same key returns the first job and inserts nothing.
select pgq.enqueue('once', '{"n": 1}', :'q', idempotency_key => :'key' || '-1') as first_id \gset
select pgq_test.state_digest() as before \gset
select is(pgq.enqueue('once', '{"n": 2}', :'q2', priority => 7, idempotency_key => :'key' || '-1'),
    :first_id::bigint, 'enqueue with a known idempotency key returns the first job''s id');
select is(pgq_test.state_digest(), :'before', 'enqueue with a known idempotency key inserts and changes nothing');
select is((pgq_test.job(:first_id)).payload, '{"n": 1}'::jsonb, 'the first job keeps its own payload');

-- enqueue_many: ids in input order.
select pgq.enqueue_many(array['a', 'b', 'c'], queues => array[:'q', :'q', :'q']) as ids \gset
select is((select array_agg(j.job_name order by u.ord)
             from unnest(:'ids'::bigint[]) with ordinality as u(id, ord)
             join pgq.jobs j on j.id = u.id),
    array['a', 'b', 'c'], 'enqueue_many returns the ids in input order');
select is(cardinality(:'ids'::bigint[]), 3, 'enqueue_many returns one id per job');

-- Per-job settings, and NULL elements taking the defaults.
select pgq.enqueue_many(array['n1', 'n2', 'n3'],
                        array[null, '{"a": 1}', '{"b": 2}']::jsonb[],
                        array[null, :'q', :'q2'],
                        array[null, now() + interval '1 hour', now() - interval '1 minute']::timestamptz[],
                        array[null, 4, -1],
                        array[null, 8, null]) as ids \gset
select row_eq(format($$select j.job_name, j.payload, j.queue, j.run_at, j.priority, j.max_retries
                         from pgq.jobs j where j.id = (%L::bigint[])[1]$$, :'ids'),
    row('n1'::text, '{}'::jsonb, 'default'::text, now(), 0, 5),
    'NULL elements take the defaults (payload, queue, run_at, priority, max_retries)');
select row_eq(format($$select j.job_name, j.payload, j.queue, j.run_at, j.priority, j.max_retries
                         from pgq.jobs j where j.id = (%L::bigint[])[2]$$, :'ids'),
    row('n2'::text, '{"a": 1}'::jsonb, :'q'::text, now() + interval '1 hour', 4, 8),
    'each job''s own payload, queue, run_at, priority and max_retries are honoured');
select row_eq(format($$select j.job_name, j.payload, j.queue, j.run_at, j.priority, j.max_retries
                         from pgq.jobs j where j.id = (%L::bigint[])[3]$$, :'ids'),
    row('n3'::text, '{"b": 2}'::jsonb, :'q2'::text, now() - interval '1 minute', -1, 2),
    'a NULL max_retries element takes that job''s own queue setting');
select pgq_test.fresh_queue('many-a') as qa \gset
select pgq_test.fresh_queue('many-b') as qb \gset
select pgq.enqueue_many(array['x', 'y', 'z'], queues => array[:'qa', :'qb', :'qa']) as many_ids \gset
select is((select count(*) from pgq.queues q where q.queue in (:'qa', :'qb')), 2::bigint,
    'enqueue_many creates the pgq.queues row of each new queue');

-- enqueue_many and idempotency keys.
select pgq.enqueue_many(array['d1', 'd2', 'd3'], queues => array[:'q', :'q', :'q'],
                        idempotency_keys => array[:'key' || '-dup', null, :'key' || '-dup']) as ids \gset
select is((:'ids'::bigint[])[1], (:'ids'::bigint[])[3], 'duplicate keys within one batch map to the same job');
select is((select count(*) from pgq.jobs j where j.idempotency_key = :'key' || '-dup'), 1::bigint,
    'duplicate keys within one batch insert one job');
select is((pgq_test.job((:'ids'::bigint[])[1])).job_name, 'd1', 'the first job of a duplicated key is the one kept');
select isnt((:'ids'::bigint[])[2], (:'ids'::bigint[])[1], 'a job without a key in the same batch is its own job');
select pgq.enqueue_many(array['e1', 'e2'], queues => array[:'q', :'q'],
                        idempotency_keys => array[:'key' || '-1', :'key' || '-new']) as ids \gset
select is((:'ids'::bigint[])[1], :first_id::bigint, 'an existing key maps to the existing job');
select is((select count(*) from pgq.jobs j where j.idempotency_key = :'key' || '-1'), 1::bigint,
    'an existing key inserts nothing');
select is((pgq_test.job((:'ids'::bigint[])[2])).job_name, 'e2', 'a new key in the same batch is inserted');

-- enqueue_many with nothing to enqueue.
select pgq_test.state_digest() as before \gset
select is(pgq.enqueue_many('{}'::text[]), '{}'::bigint[], 'enqueue_many of an empty array returns {}');
select is(pgq_test.state_digest(), :'before', 'enqueue_many of an empty array inserts nothing');

-- enqueue_many refusals: PQ001 naming the array or the job, and nothing inserted.
select throws_ok($$select pgq.enqueue_many(null)$$, 'PQ001', null,
    'enqueue_many with NULL job_names is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a refused NULL job_names inserts nothing');
select throws_ok($$select pgq.enqueue_many(array['a', 'b'], array['{}']::jsonb[])$$, 'PQ001', null,
    'a payloads array shorter than job_names is refused with invalid_argument');
select throws_like($$select pgq.enqueue_many(array['a', 'b'], array['{}']::jsonb[])$$, '%payloads%',
    'the refusal names the payloads array');
select is(pgq_test.state_digest(), :'before', 'a refused mismatched payloads array inserts nothing');
select throws_ok($$select pgq.enqueue_many(array['a', 'b'], priorities => array[1, 2, 3])$$, 'PQ001', null,
    'a priorities array longer than job_names is refused with invalid_argument');
select throws_like($$select pgq.enqueue_many(array['a', 'b'], priorities => array[1, 2, 3])$$, '%priorities%',
    'the refusal names the priorities array');
select is(pgq_test.state_digest(), :'before', 'a refused mismatched priorities array inserts nothing');
select throws_like($$select pgq.enqueue_many(array['a'], idempotency_keys => '{}'::text[])$$,
    '%idempotency_keys%', 'an empty idempotency_keys array for one job is refused, naming the array');
select is(pgq_test.state_digest(), :'before', 'a refused mismatched idempotency_keys array inserts nothing');
select throws_ok(format($$select pgq.enqueue_many(array['ok', '', 'ok'], queues => array[%L, %L, %L])$$,
                        :'q_bad', :'q_bad', :'q_bad'),
    'PQ001', null, 'one bad job name in a batch is refused with invalid_argument');
select throws_like(format($$select pgq.enqueue_many(array['ok', '', 'ok'], queues => array[%L, %L, %L])$$,
                          :'q_bad', :'q_bad', :'q_bad'),
    '%job 2 of 3%', 'the refusal names the bad job''s index');
select is(pgq_test.state_digest(), :'before', 'a batch with one bad job inserts none of its jobs');
select throws_like(format($$select pgq.enqueue_many(array['a', 'b'], array['{}', '[1]']::jsonb[], array[%L, %L])$$,
                          :'q_bad', :'q_bad'),
    '%payload%job 2 of 2%', 'a bad payload in a batch is refused, naming the payload and the job');
select is(pgq_test.state_digest(), :'before', 'a batch with one bad payload inserts nothing');
select throws_ok(format($$select pgq.enqueue_many(array['a', null], queues => array[%L, %L])$$, :'q_bad', :'q_bad'),
    'PQ001', null, 'a NULL job name in a batch is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a batch with a NULL job name inserts nothing');
select throws_ok(format($$select pgq.enqueue_many(array['a', 'b'], max_retries => array[1, -1],
                                                  queues => array[%L, %L])$$, :'q_bad', :'q_bad'),
    'PQ001', null, 'a negative max_retries in a batch is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a batch with a negative max_retries inserts nothing');
select throws_ok($$select pgq.enqueue_many(array['a', 'b'], queues => array['ok', ''])$$, 'PQ001', null,
    'an empty queue name in a batch is refused with invalid_argument');
select is(pgq_test.state_digest(), :'before', 'a batch with an empty queue name inserts nothing');

-- Concurrency keys: kept with the job, NULL by default.
select pgq.enqueue('keyed', '{}', :'q', concurrency_key => 'customer-7') as job_id \gset
select is((pgq_test.job(:job_id)).concurrency_key, 'customer-7', 'enqueue keeps the concurrency_key');
select pgq.enqueue('unkeyed', '{}', :'q') as job_id \gset
select is((pgq_test.job(:job_id)).concurrency_key, null, 'concurrency_key defaults to NULL');
select pgq.enqueue_many(array['a', 'b', 'c'], queues => array[:'q', :'q', :'q'],
                        concurrency_keys => array['k1', null, 'k1']) as ids \gset
select is(array(select j.concurrency_key from pgq.jobs j where j.id = any (:'ids'::bigint[]) order by j.id),
    array['k1', null, 'k1'], 'enqueue_many keeps each job''s concurrency key (NULL: none)');

-- Bad concurrency keys are refused, naming the argument; nothing is enqueued.
select pgq_test.state_digest() as before \gset
select throws_ok(format($$select pgq.enqueue('x', '{}', %L, concurrency_key => '')$$, :'q'), 'PQ001',
    'invalid concurrency_key: must be 1 to 512 characters',
    'an empty concurrency_key is refused with invalid_argument');
select throws_ok(format($$select pgq.enqueue('x', '{}', %L, concurrency_key => repeat('k', 513))$$, :'q'),
    'PQ001', null, 'an oversized concurrency_key is refused');
select throws_ok(format($$select pgq.enqueue_many(array['a', 'b'], concurrency_keys => array['k', ''])$$),
    'PQ001', 'invalid concurrency_key: must be 1 to 512 characters (job 2 of 2)',
    'enqueue_many names the job with the bad concurrency_key');
select throws_ok($$select pgq.enqueue_many(array['a', 'b'], concurrency_keys => array['k'])$$,
    'PQ001', 'invalid concurrency_keys: concurrency_keys has 1 elements, job_names has 2',
    'a concurrency_keys array of the wrong length is refused');
select is(pgq_test.state_digest(), :'before', 'the refused concurrency keys enqueued nothing');

-- Keyed jobs are inserted in key order (so overlapping batches cannot deadlock), yet
-- the ids come back in input order, existing keys included.
select pgq.enqueue('pre', '{}', :'q', idempotency_key => :'key' || '-m') as pre_id \gset
select pgq.enqueue_many(array['z', 'm', 'a'], queues => array[:'q', :'q', :'q'],
                        idempotency_keys => array[:'key' || '-z', :'key' || '-m', :'key' || '-a']) as ids \gset
select is(array(select j.idempotency_key from unnest(:'ids'::bigint[]) with ordinality as i(id, ord)
                  join pgq.jobs j on j.id = i.id order by i.ord),
    array[:'key' || '-z', :'key' || '-m', :'key' || '-a'],
    'enqueue_many returns the ids of unsorted keys in input order');
select is((:'ids'::bigint[])[2], :pre_id::bigint, 'an existing key returns its job''s id in its place');
select is((select j.job_name from pgq.jobs j where j.id = (:'ids'::bigint[])[3]), 'a',
    'each new keyed job has its own input''s fields');

-- A keyed single job: an existing key in a queue not met yet creates the queue and
-- returns the existing job; a key freed by its job's removal is taken anew; a bad
-- concurrency key with a free idempotency key inserts nothing.
select pgq.enqueue('kq-first', '{}', :'q', idempotency_key => :'key' || '-kq') as kq_id \gset
select pgq_test.fresh_queue('kq') as kq \gset
select is(pgq.enqueue('kq-again', '{}', :'kq', idempotency_key => :'key' || '-kq'), :kq_id::bigint,
    'enqueue with a known key into a new queue returns the existing job');
select is((pgq_test.queue_settings(:'kq')).queue, :'kq', '... and still creates the queue it named');
delete from pgq.jobs j where j.id = :kq_id;
select pgq.enqueue('kq-new', '{}', :'q', idempotency_key => :'key' || '-kq') as kq_new_id \gset
select ok(:kq_new_id::bigint <> :kq_id::bigint and (pgq_test.job(:kq_new_id)).job_name = 'kq-new',
    'a key whose job is gone is free: enqueue inserts a new job for it');
select pgq_test.state_digest() as before \gset
select throws_ok(format($$select pgq.enqueue('kq-bad', '{}', %L, idempotency_key => %L, concurrency_key => '')$$,
                        :'q', :'key' || '-kq-bad'),
    'PQ001', 'invalid concurrency_key: must be 1 to 512 characters',
    'a keyed enqueue with a bad concurrency key is refused');
select is(pgq_test.state_digest(), :'before', 'the refused keyed enqueue inserted nothing');

-- Internal: the job checks shared by enqueue and enqueue_many.
select lives_ok($$select pgq._check_jobs(array['a', 'b'], null, null, null, null)$$,
    '_check_jobs passes good jobs whose other fields are all NULL arrays');
select lives_ok($$select pgq._check_jobs(array['a'], array['{}'::jsonb], array[0], array['k'], array['c'])$$,
    '_check_jobs passes a job with every field set and valid');
select throws_ok($$select pgq._check_jobs(array['a', '', 'b'], null, array[1001, 1001, 1001], null, null)$$,
    'PQ001', 'invalid max_retries 1001: must be between 0 and 1000 (job 1 of 3)',
    '_check_jobs names the first bad job in input order, and its first bad field');
select throws_ok($$select pgq._check_jobs(array['a', ''], null, null, null, null)$$,
    'PQ001', 'invalid job_name: must be 1 to 200 characters (job 2 of 2)',
    '_check_jobs refuses an empty job name, naming the job');
select throws_ok($$select pgq._check_jobs(array['a'], array['[]'::jsonb], null, null, null)$$,
    'PQ001', 'invalid payload: must be a JSON object, not array',
    '_check_jobs of one job says what is wrong without a job index');

-- Internal: the queue creation shared by enqueue and enqueue_many.
select pgq_test.fresh_queue('aq') as aq \gset
select lives_ok(format($$select pgq._add_queues(array[%L, %L, null])$$, :'aq', :'aq'),
    '_add_queues of a new queue (named twice) and NULL');
select is((select count(*) from pgq.queues q where q.queue in (:'aq', 'default')), 2::bigint,
    '_add_queues created the new queue once, and a NULL name is the default queue');
select pgq_test.state_digest() as before \gset
select throws_ok(format($$select pgq._add_queues(array[%L, ''])$$, :'aq' || '-2'), 'PQ001',
    'invalid queue: must be 1 to 128 characters (job 2 of 2)',
    '_add_queues refuses an empty queue name, naming its job');
select is(pgq_test.state_digest(), :'before', 'a refused _add_queues creates no queue');

-- Internal: no role may call them.
set local role pgq_producer;
select throws_ok('select pgq.' || c.call, '42501', null, 'pgq_producer may not call pgq.' || c.call)
  from (values ('_check_jobs(null, null, null, null, null)'), ('_add_queues(null)'),
               ('_reject_job(1, 1, ''x'')')) as c(call);
reset role;
set local role pgq_worker;
select throws_ok('select pgq.' || c.call, '42501', null, 'pgq_worker may not call pgq.' || c.call)
  from (values ('_check_jobs(null, null, null, null, null)'), ('_add_queues(null)'),
               ('_reject_job(1, 1, ''x'')')) as c(call);
reset role;
set local role pgq_admin;
select throws_ok('select pgq.' || c.call, '42501', null, 'pgq_admin may not call pgq.' || c.call)
  from (values ('_check_jobs(null, null, null, null, null)'), ('_add_queues(null)'),
               ('_reject_job(1, 1, ''x'')')) as c(call);
reset role;

-- Privileges: producers and admins enqueue, workers do not.
set local role pgq_producer;
select lives_ok(format($$select pgq.enqueue('as-producer', '{}', %L)$$, :'q'), 'pgq_producer can call enqueue');
select lives_ok(format($$select pgq.enqueue_many(array['as-producer'], queues => array[%L])$$, :'q'),
    'pgq_producer can call enqueue_many');
reset role;
select pgq_test.state_digest() as before \gset
set local role pgq_worker;
select throws_ok(format($$select pgq.enqueue('as-worker', '{}', %L)$$, :'q'), '42501', null,
    'pgq_worker cannot call enqueue');
select throws_ok(format($$select pgq.enqueue_many(array['as-worker'], queues => array[%L])$$, :'q'), '42501', null,
    'pgq_worker cannot call enqueue_many');
reset role;
select is(pgq_test.state_digest(), :'before', 'the refused worker calls inserted nothing');
set local role pgq_admin;
select lives_ok(format($$select pgq.enqueue('as-admin', '{}', %L)$$, :'q'), 'pgq_admin can call enqueue');
select lives_ok(format($$select pgq.enqueue_many(array['as-admin'], queues => array[%L])$$, :'q'),
    'pgq_admin can call enqueue_many');
reset role;
select is((select count(*) from pgq.jobs j where j.queue = :'q' and j.job_name in ('as-producer', 'as-admin')),
    4::bigint, 'the jobs enqueued under pgq_producer and pgq_admin were inserted');

select * from finish();
rollback;
