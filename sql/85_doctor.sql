-- sql/85_doctor.sql: every way restricted roles can still reach protected rows, and
-- every way enforcement has been weakened, each with its fix.

-- PostgreSQL minor releases that fixed row-level security flaws: a server older than
-- the fix in its major version is exposed.
create or replace function privacy.rls_cves()
    returns table (major integer, fixed_in integer, cve text, summary text)
    immutable
    set search_path = ''
    language sql
as $$
    values (15, 3, 'CVE-2023-2455', 'row security policies disregard user ID changes after inlining'),
           (15, 4, 'CVE-2023-39418', 'MERGE fails to enforce UPDATE or SELECT row security policies'),
           (15, 10, 'CVE-2024-10976', 'row security below subqueries disregards user ID changes'),
           (14, 8, 'CVE-2023-2455', 'row security policies disregard user ID changes after inlining'),
           (14, 15, 'CVE-2024-10976', 'row security below subqueries disregards user ID changes'),
           (13, 11, 'CVE-2023-2455', 'row security policies disregard user ID changes after inlining'),
           (13, 18, 'CVE-2024-10976', 'row security below subqueries disregards user ID changes'),
           (16, 6, 'CVE-2024-10976', 'row security below subqueries disregards user ID changes'),
           (17, 2, 'CVE-2024-10976', 'row security below subqueries disregards user ID changes')
$$;

-- True when ROLE sees every row of protected tables anyway (and so is no restricted role).
create or replace function privacy.sees_everything(p_role oid)
    returns boolean
    stable
    set search_path = ''
    language sql
as $$
    select r.rolsuper or r.rolbypassrls or pg_catalog.pg_has_role(r.oid, privacy.steward_role(), 'MEMBER')
      from pg_catalog.pg_roles r where r.oid = p_role
$$;

-- The findings: severity 'error' (enforcement is weakened or bypassed) or 'warning'
-- (roles and channels that see everything: fine for people and tools that must,
-- never for an application). fix_sql is set where the fix is safe to apply as is.
create or replace function privacy.doctor()
    returns table (severity text, category text, object text, finding text, fix text, fix_sql text)
    stable
    security definer
    set search_path = ''
    set jit = off  -- catalog queries the planner overestimates: JIT cost 600 ms a call
    language plpgsql
as $$
declare
    v_protected oid[];
    v_version integer := pg_catalog.current_setting('server_version_num')::integer;
    r record;
    v_found boolean;
begin
    select coalesce(pg_catalog.array_agg(x.oid), '{}') into v_protected from (
        select privacy.relation_of(p)::oid as oid from privacy.protected_tables p
        union
        select d.relid from privacy.protected_tables p cross join lateral privacy.descendants(p.relid) d
    ) x where x.oid is not null;

    -- Generated enforcement that is missing, disabled, outdated or altered.
    for r in select * from privacy.enforcement_status() s where s.state <> 'installed' loop
        severity := 'error'; category := 'enforcement ' || r.state; object := r.relation;
        finding := pg_catalog.format('enforcement on %s is %s (%s)', r.relation, r.state, r.detail);
        fix := 'regenerate it: pyctl install (or select privacy.refresh_enforcement())';
        fix_sql := 'select privacy.refresh_enforcement()';
        return next;
    end loop;

    -- Login roles that see every row.
    for r in select * from pg_catalog.pg_roles x
              where x.rolcanlogin and x.oid <> 10 and (x.rolsuper or x.rolbypassrls or x.rolreplication) order by x.rolname loop
        severity := 'warning'; category := 'privileged login'; object := r.rolname;
        finding := pg_catalog.format('login role %s is %s: it sees restricted rows%s', r.rolname,
            pg_catalog.array_to_string(pg_catalog.array_remove(array[case when r.rolsuper then 'a superuser' end,
                case when r.rolbypassrls then 'BYPASSRLS' end, case when r.rolreplication then 'REPLICATION' end], null), ', '),
            case when r.rolsuper then ' and can disable triggers' else '' end);
        fix := pg_catalog.format('never let an application connect as %s; ALTER ROLE %I NOSUPERUSER NOBYPASSRLS NOREPLICATION where it need not be', r.rolname, r.rolname);
        fix_sql := null;
        return next;
    end loop;

    -- Login roles that own a protected table or belong to an owner, or are stewards.
    for r in
        select x.rolname, pg_catalog.string_agg(distinct c.oid::regclass::text, ', ') as tables
          from pg_catalog.pg_roles x
          join pg_catalog.pg_class c on c.oid = any (v_protected) and pg_catalog.pg_has_role(x.oid, c.relowner, 'USAGE')
         where x.rolcanlogin and not x.rolsuper
         group by x.rolname order by x.rolname
    loop
        severity := 'warning'; category := 'owner login'; object := r.rolname;
        finding := pg_catalog.format('login role %s owns (or acts as the owner of) %s and so bypasses row-level security', r.rolname, r.tables);
        fix := pg_catalog.format('keep %s for migrations and backups; connect applications as a role made by pyctl roles create-app', r.rolname);
        fix_sql := null;
        return next;
    end loop;
    for r in select x.rolname from pg_catalog.pg_roles x
              where x.rolcanlogin and not x.rolsuper and pg_catalog.pg_has_role(x.oid, privacy.steward_role(), 'MEMBER') order by 1 loop
        severity := 'warning'; category := 'steward login'; object := r.rolname;
        finding := pg_catalog.format('login role %s is a steward: it sees and may correct restricted rows', r.rolname);
        fix := pg_catalog.format('only people and tools of the privacy team should be stewards: REVOKE %I FROM %I otherwise', privacy.steward_role(), r.rolname);
        fix_sql := null;
        return next;
    end loop;

    -- Views over protected tables that run with their owner's rights.
    for r in
        with recursive deps(view_oid, base) as (
            select v.oid, d.refobjid
              from pg_catalog.pg_class v
              join pg_catalog.pg_rewrite w on w.ev_class = v.oid
              join pg_catalog.pg_depend d on d.classid = 'pg_catalog.pg_rewrite'::regclass and d.objid = w.oid
                                         and d.refclassid = 'pg_catalog.pg_class'::regclass
             where v.relkind in ('v', 'm') and d.refobjid = any (v_protected) and d.refobjid <> v.oid
               and v.relnamespace <> 'privacy'::regnamespace  -- the toolkit's own views: its owner's alone
            union
            select v.oid, deps.base
              from deps
              join pg_catalog.pg_depend d on d.refobjid = deps.view_oid and d.classid = 'pg_catalog.pg_rewrite'::regclass
              join pg_catalog.pg_rewrite w on w.oid = d.objid
              join pg_catalog.pg_class v on v.oid = w.ev_class
             where v.relkind in ('v', 'm') and v.oid <> deps.view_oid
        )
        select v.oid, v.relkind, v.oid::regclass::text as name,
               pg_catalog.string_agg(distinct deps.base::regclass::text, ', ') as bases,
               coalesce((select o.option_value from pg_catalog.pg_options_to_table(v.reloptions) o
                          where o.option_name = 'security_invoker'), 'false') in ('true', 'on', '1', 'yes') as invoker,
               (select pg_catalog.string_agg(g.rolname, ', ' order by g.rolname) from pg_catalog.pg_roles g
                 where not privacy.sees_everything(g.oid) and pg_catalog.has_table_privilege(g.oid, v.oid, 'SELECT')
                   and not pg_catalog.pg_has_role(g.oid, v.relowner, 'USAGE')) as readers
          from deps join pg_catalog.pg_class v on v.oid = deps.view_oid
         group by v.oid
         order by 3
    loop
        if r.relkind = 'm' then
            severity := 'error'; category := 'materialized view'; object := r.name;
            finding := pg_catalog.format('materialized view %s copies rows of %s, restricted ones included, outside enforcement', r.name, r.bases);
            fix := pg_catalog.format('drop it, or REVOKE SELECT ON %s from every restricted role and refresh it only while no restriction is active', r.name);
            fix_sql := null;
            return next;
        elsif not r.invoker and r.readers is not null then
            severity := 'error'; category := 'definer view'; object := r.name;
            finding := pg_catalog.format('view %s reads %s with its owner''s rights, so %s see restricted rows through it', r.name, r.bases, r.readers);
            fix := pg_catalog.format('ALTER VIEW %s SET (security_invoker = on)', r.name);
            fix_sql := fix;
            return next;
        end if;
    end loop;

    -- SECURITY DEFINER functions whose owner bypasses row-level security and whose body names a protected table.
    for r in
        select pr.oid::regprocedure::text as name, pg_catalog.string_agg(distinct c.oid::regclass::text, ', ') as tables
          from pg_catalog.pg_proc pr
          join pg_catalog.pg_class c on c.oid = any (v_protected)
         where pr.prosecdef and pr.pronamespace <> 'privacy'::regnamespace and pr.pronamespace <> 'pg_catalog'::regnamespace
           and (privacy.sees_everything(pr.proowner) or pg_catalog.pg_has_role(pr.proowner, c.relowner, 'USAGE'))
           and pr.prosrc ~* ('\m' || pg_catalog.regexp_replace(c.relname, '([^[:alnum:]_])', '\\\1', 'g') || '\M')
           and exists (select 1 from pg_catalog.pg_roles g where not privacy.sees_everything(g.oid)
                        and pg_catalog.has_function_privilege(g.oid, pr.oid, 'EXECUTE')
                        and not pg_catalog.pg_has_role(g.oid, pr.proowner, 'USAGE'))
         group by pr.oid order by 1
    loop
        severity := 'error'; category := 'definer function'; object := r.name;
        finding := pg_catalog.format('SECURITY DEFINER function %s reads %s with its owner''s rights and restricted roles may call it', r.name, r.tables);
        fix := pg_catalog.format('make it SECURITY INVOKER (ALTER FUNCTION %s SECURITY INVOKER) or REVOKE EXECUTE from restricted roles', r.name);
        fix_sql := null;
        return next;
    end loop;

    -- Rules on any table whose actions read or write a protected table.
    for r in
        select w.rulename, w.ev_class::regclass::text as on_table, pg_catalog.string_agg(distinct d.refobjid::regclass::text, ', ') as tables
          from pg_catalog.pg_rewrite w
          join pg_catalog.pg_depend d on d.classid = 'pg_catalog.pg_rewrite'::regclass and d.objid = w.oid
                                     and d.refclassid = 'pg_catalog.pg_class'::regclass and d.refobjid = any (v_protected)
         where w.rulename <> '_RETURN'
         group by w.oid, w.rulename, w.ev_class order by 2, 1
    loop
        severity := 'error'; category := 'rule'; object := r.on_table || '.' || r.rulename;
        finding := pg_catalog.format('rule %s on %s touches %s; rules run with the table owner''s rights', r.rulename, r.on_table, r.tables);
        fix := pg_catalog.format('replace it with a trigger, or DROP RULE %I ON %s', r.rulename, r.on_table);
        fix_sql := null;
        return next;
    end loop;

    -- Publications carry rows to subscribers that do not obey row-level security.
    for r in select pt.pubname, pg_catalog.string_agg(privacy.qualified(pt.schemaname, pt.tablename), ', ' order by pt.tablename) as tables
               from pg_catalog.pg_publication_tables pt
              where pg_catalog.to_regclass(privacy.qualified(pt.schemaname, pt.tablename)) = any (v_protected)
              group by pt.pubname order by 1 loop
        severity := 'error'; category := 'publication'; object := r.pubname;
        finding := pg_catalog.format('publication %s carries %s, restricted and held rows included, to subscribers that do not enforce them', r.pubname, r.tables);
        fix := pg_catalog.format('ALTER PUBLICATION %I DROP TABLE ..., or install pyctl on the subscriber and register it: pyctl fleet add', r.pubname);
        fix_sql := null;
        return next;
    end loop;
    for r in select s.slot_name, s.plugin, s.database from pg_catalog.pg_replication_slots s
              where s.slot_type = 'logical' and s.database = pg_catalog.current_database() order by 1 loop
        severity := 'warning'; category := 'replication slot'; object := r.slot_name;
        finding := pg_catalog.format('logical replication slot %s (%s) can stream every row of protected tables', r.slot_name, r.plugin);
        fix := pg_catalog.format('drop it when unused: select pg_drop_replication_slot(%L)', r.slot_name);
        fix_sql := null;
        return next;
    end loop;

    -- Foreign tables: data outside this database's enforcement.
    for r in select c.oid::regclass::text as name from pg_catalog.pg_class c where c.relkind = 'f' order by 1 loop
        severity := 'warning'; category := 'foreign table'; object := r.name;
        finding := pg_catalog.format('foreign table %s reads data that this database cannot hold or restrict', r.name);
        fix := 'install pyctl where that data lives, and protect it there';
        fix_sql := null;
        return next;
    end loop;

    -- The toolkit's permissive policy widening a permissive policy added since.
    for r in select pol.polrelid::regclass::text as name, pg_catalog.string_agg(o.polname, ', ') as own
               from pg_catalog.pg_policy pol
               join pg_catalog.pg_policy o on o.polrelid = pol.polrelid and o.polpermissive and o.polname !~ '^privacy_'
              where pol.polname = 'privacy_permit_all' and pol.polrelid = any (v_protected)
              group by pol.polrelid order by 1 loop
        severity := 'error'; category := 'widening policy'; object := r.name;
        finding := pg_catalog.format('privacy_permit_all on %s (true) is OR-ed with the table''s own permissive policies %s and so disables them', r.name, r.own);
        fix := 'regenerate enforcement: it adds privacy_permit_all only where the table has no permissive policy of its own';
        fix_sql := 'select privacy.refresh_enforcement()';
        return next;
    end loop;
    -- A permissive policy of the table's own that lets restricted roles see everything is fine:
    -- the toolkit's policy is restrictive and is AND-ed with it.

    -- Who may set session_replication_role (which turns triggers off) without being a superuser.
    for r in select a.grantee, a.privilege_type from pg_catalog.pg_parameter_acl p
               cross join lateral pg_catalog.aclexplode(p.paracl) e
               cross join lateral (select case when e.grantee = 0 then 'public' else pg_catalog.pg_get_userbyid(e.grantee)::text end as grantee,
                                          e.privilege_type) a
              where p.parname = 'session_replication_role' order by 1 loop
        severity := 'error'; category := 'parameter grant'; object := r.grantee;
        finding := pg_catalog.format('%s may SET session_replication_role, which switches the toolkit''s triggers off', r.grantee);
        fix := pg_catalog.format('REVOKE %s ON PARAMETER session_replication_role FROM %s', r.privilege_type,
                                 case when r.grantee = 'public' then 'PUBLIC' else pg_catalog.quote_ident(r.grantee) end);
        fix_sql := null;
        return next;
    end loop;

    -- The toolkit's own functions: who may execute each must be what the shipped model
    -- says (90_grants.sql), or its trust boundary is not what the README promises.
    for r in
        select x.f, x.expected, x.actual,
               (select pg_catalog.array_agg(a order by a) from pg_catalog.unnest(x.actual) a where not a = any (coalesce(x.expected, '{}'))) as extra,
               (select pg_catalog.array_agg(e order by e) from pg_catalog.unnest(x.expected) e where not e = any (x.actual)) as lacking
          from (select p.oid::regprocedure::text as f, privacy.expected_grantees(p.oid) as expected,
                       array(select distinct case when e.grantee = 0 then 'PUBLIC' else pg_catalog.pg_get_userbyid(e.grantee)::text end
                               from pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) e
                              where e.privilege_type = 'EXECUTE' and e.grantee <> p.proowner) as actual
                  from pg_catalog.pg_proc p where p.pronamespace = 'privacy'::regnamespace) x
         order by x.f
    loop
        if r.expected is null then
            severity := 'error'; category := 'unclassified function'; object := r.f;
            finding := pg_catalog.format('function %s in schema privacy is not part of the toolkit''s privilege model', r.f);
            fix := pg_catalog.format('drop it (DROP FUNCTION %s), or reinstall: pyctl install drops what the model does not know', r.f);
            fix_sql := null;
            return next;
        elsif r.extra is not null or r.lacking is not null then
            severity := 'error'; category := 'function grants'; object := r.f;
            finding := pg_catalog.format('%s may be executed by %s; the model says: %s', r.f,
                coalesce(pg_catalog.array_to_string(r.actual, ', '), 'nobody'),
                coalesce(nullif(pg_catalog.array_to_string(r.expected, ', '), ''), 'the toolkit''s owner only'));
            fix := pg_catalog.concat_ws('; ',
                (select pg_catalog.string_agg(pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM %s', r.f,
                            case when g = 'PUBLIC' then 'PUBLIC' else pg_catalog.quote_ident(g) end), '; ') from pg_catalog.unnest(r.extra) g),
                (select pg_catalog.string_agg(pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s', r.f,
                            case when g = 'PUBLIC' then 'PUBLIC' else pg_catalog.quote_ident(g) end), '; ') from pg_catalog.unnest(r.lacking) g));
            fix_sql := fix;
            return next;
        end if;
    end loop;

    -- The superuser's DDL guards, switched off.
    for r in select e.evtname from pg_catalog.pg_event_trigger e
              where e.evtname in ('privacy_protect_new_partitions', 'privacy_refuse_dropping_held_data') and e.evtenabled = 'D' order by 1 loop
        severity := 'error'; category := 'ddl guard disabled'; object := r.evtname;
        finding := pg_catalog.format('event trigger %s is disabled: DDL is neither healed nor refused', r.evtname);
        fix := pg_catalog.format('as a superuser: ALTER EVENT TRIGGER %I ENABLE', r.evtname);
        fix_sql := null;
        return next;
    end loop;

    -- Without the event triggers (a non-superuser installed), DDL is unguarded.
    if not exists (select 1 from pg_catalog.pg_event_trigger e where e.evtname = 'privacy_refuse_dropping_held_data')
       and exists (select 1 from privacy.protected_tables) then
        severity := 'warning'; category := 'no ddl guard'; object := pg_catalog.current_database();
        finding := 'no event triggers (installed without a superuser): DROP TABLE, DROP COLUMN and ALTER COLUMN TYPE of held data '
                   'are refused through the holds'' guard views, but DROP ... CASCADE removes held data unnoticed until pyctl hold verify, '
                   'and a partition created later is enforced at the next placement, release or pyctl command';
        fix := 'run pyctl install once as a superuser where the platform allows it; run pyctl hold verify --all after migrations';
        fix_sql := null;
        return next;
    end if;

    -- Held rows where hold verify no longer looks: a partition or child detached from a
    -- protected table (its own triggers still refuse changes to them).
    for r in select c.oid::regclass as rel from pg_catalog.pg_class c
              where c.relkind = 'r'
                and exists (select 1 from pg_catalog.pg_trigger t where t.tgrelid = c.oid and t.tgname in ('Privacy_check_detached_delete', 'zz_privacy_detached_delete'))
                and not exists (select 1 from privacy.protected_tables p
                                 where p.relid = c.oid or exists (select 1 from privacy.descendants(p.relid) d where d.relid = c.oid)) loop
        execute pg_catalog.format('select exists (select 1 from only %s where privacy_mark & 1 <> 0)', r.rel) into v_found;
        if v_found then
            severity := 'error'; category := 'detached held data'; object := r.rel::text;
            finding := pg_catalog.format('%s was detached from a protected table and holds rows under an active legal hold: its own '
                                         'triggers still refuse changes to them, but pyctl hold verify reports them missing', r.rel);
            fix := 'attach it again (ALTER TABLE parent ATTACH PARTITION ...), or keep it until the holds are released';
            fix_sql := null;
            return next;
        end if;
    end loop;
    -- Held relations whose guard view (which refuses DROP without event triggers) is gone.
    for r in select h.relid::regclass as rel from privacy.held_relations(null) h
              where not exists (select 1 from privacy.hold_guards() g where g.guarded = h.relid) loop
        severity := 'error'; category := 'hold guard missing'; object := r.rel::text;
        finding := pg_catalog.format('%s holds rows under a legal hold but no guard view refuses DROP TABLE, DROP COLUMN or '
                                     'ALTER COLUMN TYPE of it', r.rel);
        fix := 'pyctl install (or any placement or release) recreates it';
        fix_sql := 'select privacy.guard_held_relations(null)';
        return next;
    end loop;

    -- Holds in force whose proof (their digests) was never computed: placement interrupted
    -- after the hold took effect, or placed from SQL without privacy.prove_hold.
    for r in select * from privacy.pending_proofs() loop
        severity := 'warning'; category := 'hold proof pending'; object := r.hold_id::text;
        finding := pg_catalog.format('legal hold %s (%s %s, case %s) is in force, but its proof of what the held data is has not been '
                                     'computed yet', r.hold_id, r.subject_type, r.subject_key, r.case_ref);
        fix := 'pyctl hold prove --all';
        fix_sql := pg_catalog.format('select privacy.prove_hold(%L)', r.hold_id);
        return next;
    end loop;

    -- A fork, rollback or restored dump not synced since it became one.
    for r in select * from privacy.copy_status() c where c.is_copy loop
        severity := 'error'; category := 'unsynced copy'; object := r.current_identity;
        finding := pg_catalog.format('this database is a copy (identity %s; installed as %s): holds, restrictions, releases and '
                                     'corrections made on the primary since it was taken are missing here, and rows of subjects erased there since may be back', r.current_identity, r.recorded_identity);
        fix := 'on the primary: pyctl fleet add NAME --dsn ... --kind fork|backup, then pyctl sync NAME; or here: pyctl ledger import FILE';
        fix_sql := null;
        return next;
    end loop;

    -- Rows of subjects erased here or at a source: a restore, a rollback or a reused key brought them back.
    for r in select x.erasure_id, x.subject_type, x.subject_key, pg_catalog.string_agg(x.table_name || ' (' || x.rows || ')', ', ') as tables
               from privacy.erased_rows_present() x group by 1, 2, 3 order by 2, 3 loop
        severity := 'error'; category := 'erased data present'; object := r.subject_type || '/' || r.subject_key;
        finding := pg_catalog.format('subject %s/%s was erased (erasure %s) but has rows here again: %s',
                                     r.subject_type, r.subject_key, r.erasure_id, r.tables);
        fix := 'pyctl sync from the primary erases them again (or, if this is the primary: pyctl erase certificate ' || r.erasure_id
               || ' shows what was erased; find where the rows came from)';
        fix_sql := null;
        return next;
    end loop;

    -- Known row-level security flaws fixed in a later minor release.
    for r in select * from privacy.rls_cves() c where c.major = v_version / 10000 and v_version % 10000 < c.fixed_in loop
        severity := 'error'; category := 'server version'; object := pg_catalog.current_setting('server_version');
        finding := pg_catalog.format('PostgreSQL %s is affected by %s (%s)', object, r.cve, r.summary);
        fix := pg_catalog.format('upgrade to %s.%s or later', r.major, r.fixed_in);
        fix_sql := null;
        return next;
    end loop;

    -- Tables that hold a subject's key and are neither protected nor dismissed (pyctl
    -- coverage): confirmed by a foreign key, an error; named like the key only, a warning.
    -- And shared lookup rows protected without a person saying so (protect --shared-ok):
    -- restricting one subject hides them from the application for every subject.
    -- (One walk of the catalog per subject type: discover measures sharing in the data.)
    begin
        for r in select s.subject_type, d.*, p.shared_ok_by
                   from privacy.subject_types s
                  cross join lateral privacy.discover(s.subject_type) d
                   left join privacy.protected_tables p on d.kind = 'shared' and p.relid = d.table_name::regclass::oid
                  where d.status in ('to protect', 'unconfirmed') or (d.kind = 'shared' and d.protected)
                  order by s.subject_type, d.step loop
            if r.kind = 'shared' then
                continue when r.shared_ok_by is not null;
                severity := 'warning'; category := 'shared table protected'; object := r.table_name;
                finding := pg_catalog.format('%s is protected with the %s it points at, but %s', r.table_name, r.subject_type,
                    pg_catalog.regexp_replace(r.note, '^shared, not protected: ', ''));
                fix := pg_catalog.format('pyctl unprotect %s (once no held or restricted subject marks it), or keep it and say so: '
                    'pyctl unprotect then pyctl protect ... --shared-ok', r.table_name);
            else
                severity := case when r.status = 'to protect' then 'error' else 'warning' end;
                category := case when r.status = 'to protect' then 'unprotected table' else 'unconfirmed table' end;
                object := r.table_name;
                finding := pg_catalog.format('%s holds %s data (%s %s) and is neither protected nor dismissed: %s',
                    r.table_name, r.subject_type, r.kind, pg_catalog.array_to_string(r.columns, ','), r.note);
                fix := pg_catalog.format('pyctl discover --subject %s --apply (or pyctl protect %s ...), or if it holds no %s data: '
                    'pyctl discover --subject %s --dismiss %s --reason TEXT', r.subject_type, r.table_name, r.subject_type,
                    r.subject_type, r.table_name);
            end if;
            fix_sql := null;
            return next;
        end loop;
    exception when others then
        severity := 'warning'; category := 'coverage unknown'; object := null;
        finding := 'coverage could not be computed: ' || sqlerrm;
        fix := 'pyctl coverage shows the error'; fix_sql := null;
        return next;
    end;
    -- Purposes in use: application roles that serve none, members that do not inherit (sql/33_purposes.sql).
    return query select * from privacy.purpose_findings(v_protected);

    -- The table's own BEFORE INSERT row triggers that fire after the toolkit's (PostgreSQL
    -- fires them in name order): one could change a new row's path after it was marked.
    for r in
        select t.tgrelid::regclass::text as rel, t.tgname
          from pg_catalog.pg_trigger t
         where t.tgrelid = any (v_protected)  -- (partitions and children included)
           and not t.tgisinternal and t.tgparentid = 0 and t.tgname !~* '^(zz_)?privacy_'
           and t.tgtype::integer & 7 = 7  -- ROW (1) | BEFORE (2) | INSERT (4)
           and t.tgname::text collate "C" > 'zz_privacy_before_insert'
         order by 1, 2
    loop
        severity := 'error'; category := 'trigger after the mark'; object := r.rel || '.' || r.tgname;
        finding := pg_catalog.format('BEFORE INSERT trigger %I on %s fires after zz_privacy_before_insert, which gives a new row '
                                     'its mark: if it changes the row''s path, the row keeps the mark of the subject it had before',
                                     r.tgname, r.rel);
        fix := pg_catalog.format('rename it to sort before zz_privacy_before_insert: ALTER TRIGGER %I ON %s RENAME TO ...',
                                 r.tgname, r.rel);
        fix_sql := null;
        return next;
    end loop;

    -- Path columns without an index: placement reads the whole table.
    for r in
        select p.*, privacy.relation_of(p) as rel
          from privacy.protected_tables p order by p.id
    loop
        if r.rel is not null and not exists (
            select 1 from pg_catalog.pg_index x
             where x.indrelid = r.rel
               and (select pg_catalog.array_agg(a.attname order by k.i)
                      from pg_catalog.unnest(x.indkey) with ordinality k(n, i)
                      join pg_catalog.pg_attribute a on a.attrelid = x.indrelid and a.attnum = k.n
                     where k.i <= pg_catalog.cardinality(r.columns)) = r.columns) then
            severity := 'warning'; category := 'unindexed path'; object := r.rel::text;
            finding := pg_catalog.format('no index on %s(%s): placing or releasing a hold reads the whole table',
                r.rel, pg_catalog.array_to_string(r.columns, ', '));
            fix := pg_catalog.format('CREATE INDEX CONCURRENTLY ON %s (%s)', r.rel,
                (select pg_catalog.string_agg(pg_catalog.quote_ident(c), ', ') from pg_catalog.unnest(r.columns) c));
            fix_sql := null;
            return next;
        end if;
    end loop;
end;
$$;
