-- sql/60_recipients.sql: telling downstream systems (GDPR Art. 19) and following events.

-- Registers a recipient of the data; from now on every placement and release of a
-- restriction creates a pending notice for it.
create or replace function privacy.add_recipient(p_name text, p_description text default '')
    returns void
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
begin
    perform privacy.require_text(p_name, 'a recipient needs a name');
    if exists (select 1 from privacy.recipients r where r.name = p_name) then
        perform privacy.fail(pg_catalog.format('recipient %s already exists', p_name));
    end if;
    insert into privacy.recipients (name, description) values (p_name, coalesce(p_description, ''));
    perform privacy.ledger_append('recipient_added', null, null, null,
        pg_catalog.jsonb_build_object('recipient', p_name, 'description', coalesce(p_description, '')));
end;
$$;

-- Removes a recipient; refused while it has notices it was not told of.
create or replace function privacy.remove_recipient(p_name text)
    returns void
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    v_pending bigint;
begin
    if not exists (select 1 from privacy.recipients r where r.name = p_name) then
        perform privacy.fail(pg_catalog.format('unknown recipient %s', p_name));
    end if;
    select pg_catalog.count(*) into v_pending from privacy.recipient_notices n where n.recipient = p_name and n.acked_at is null;
    if v_pending > 0 then
        perform privacy.fail(pg_catalog.format('recipient %s still has %s pending notice(s): acknowledge them first', p_name, v_pending));
    end if;
    delete from privacy.recipients where name = p_name;
    perform privacy.ledger_append('recipient_removed', null, null, null, pg_catalog.jsonb_build_object('recipient', p_name));
end;
$$;

-- Records that RECIPIENT was told of ledger event SEQ.
create or replace function privacy.ack_notice(p_recipient text, p_seq bigint)
    returns void
    volatile
    security definer
    set search_path = ''
    language plpgsql
as $$
declare
    n privacy.recipient_notices;
    l privacy.ledger;
begin
    select * into n from privacy.recipient_notices x where x.recipient = p_recipient and x.ledger_seq = p_seq for update;
    if not found then
        perform privacy.fail(pg_catalog.format('no notice of event %s for recipient %s', p_seq, p_recipient));
    end if;
    if n.acked_at is not null then
        perform privacy.fail(pg_catalog.format('recipient %s was already told of event %s at %s', p_recipient, p_seq, n.acked_at));
    end if;
    update privacy.recipient_notices set acked_at = pg_catalog.now(),
           acked_by = privacy.acting_role()
     where recipient = p_recipient and ledger_seq = p_seq;
    select * into l from privacy.ledger x where x.seq = p_seq;
    perform privacy.ledger_append('recipient_notified', l.subject_type, l.subject_key, l.restriction_id,
        pg_catalog.jsonb_build_object('recipient', p_recipient, 'event_seq', p_seq, 'event', l.event));
end;
$$;

-- Notices not yet acknowledged, oldest first.
create or replace function privacy.pending_notices()
    returns table (recipient text, seq bigint, event text, subject_type text, subject_key text, id uuid, created_at timestamptz)
    stable
    security definer
    set search_path = ''
    language sql
as $$
    select n.recipient, l.seq, l.event, l.subject_type, l.subject_key, l.restriction_id, n.created_at
      from privacy.recipient_notices n join privacy.ledger l on l.seq = n.ledger_seq
     where n.acked_at is null
     order by l.seq, n.recipient
$$;

-- Ledger events after position P_SEQ, without payloads (no reasons, no personal data
-- beyond the subject key): what `pyctl watch` prints and downstream systems follow.
create or replace function privacy.events_since(p_seq bigint, p_limit integer default 1000)
    returns table (seq bigint, recorded_at timestamptz, event text, subject_type text, subject_key text, id uuid)
    stable
    security definer
    set search_path = ''
    language sql
as $$
    select l.seq, l.recorded_at, l.event, l.subject_type, l.subject_key, l.restriction_id
      from privacy.ledger l
     where l.seq > coalesce(p_seq, 0)
     order by l.seq
     limit greatest(p_limit, 1)
$$;
