-- The statement pgq.claim runs, with its arguments written in (batch 100).
explain (analyze, buffers, costs off)
with picked as (
    select c.id, q.lease, c.priority, c.run_at
      from pgq.queues q
     cross join lateral (
           select j.id, j.priority, j.run_at
             from pgq.jobs j
            where j.queue = q.queue
              and j.state = 'available'
              and j.run_at <= now()
            order by j.priority, j.run_at, j.id
            limit 100
              for update skip locked) as c
     where q.queue = any ('{bench}')
       and not q.paused
     order by c.priority, c.run_at, c.id
     limit 100
)
select count(*) from picked;
