-- privacy-0006: the registry follows its tables through renames. A protected table
-- and a subject type's root table are known by their OID and their columns by number;
-- the names stay as what was last seen (for people, and to find the tables again in a
-- restored dump, where OIDs and column numbers are new). privacy.heal() keeps both.
-- depends: privacy-0005-digest-columns

alter table privacy.protected_tables
    add column relid oid,
    add column attnums smallint[],
    add column parent_id integer references privacy.protected_tables (id),
    add column parent_attnums smallint[];
comment on column privacy.protected_tables.relid is 'The table (pg_class OID); table_schema and table_name are its names as last seen.';
comment on column privacy.protected_tables.attnums is 'The numbers of the columns in "columns", which hold the names as last seen.';
comment on column privacy.protected_tables.parent_id is 'via: the protected table the foreign key points at; referenced_by: the protected table whose rows point at this one.';
comment on column privacy.protected_tables.parent_attnums is 'The numbers of parent_columns in the parent table.';
create unique index protected_tables_relid on privacy.protected_tables (relid);

alter table privacy.subject_types
    add column relid oid,
    add column key_attnum smallint;
comment on column privacy.subject_types.relid is 'The root table (pg_class OID); table_schema and table_name are its names as last seen.';
comment on column privacy.subject_types.key_attnum is 'The number of key_column in the root table.';

-- Bind what is registered today by the names it was registered with.
update privacy.protected_tables p
   set relid = c.oid,
       attnums = (select pg_catalog.array_agg(a.attnum order by u.i)
                    from pg_catalog.unnest(p.columns) with ordinality u(col, i)
                    join pg_catalog.pg_attribute a on a.attrelid = c.oid and a.attname = u.col and not a.attisdropped)
  from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
 where (n.nspname, c.relname) = (p.table_schema, p.table_name);
update privacy.protected_tables p
   set parent_id = x.id,
       parent_attnums = (select pg_catalog.array_agg(a.attnum order by u.i)
                           from pg_catalog.unnest(p.parent_columns) with ordinality u(col, i)
                           join pg_catalog.pg_attribute a on a.attrelid = x.relid and a.attname = u.col and not a.attisdropped)
  from privacy.protected_tables x
 where (x.table_schema, x.table_name) = (p.parent_schema, p.parent_table);
update privacy.subject_types s
   set relid = c.oid,
       key_attnum = (select a.attnum from pg_catalog.pg_attribute a
                      where a.attrelid = c.oid and a.attname = s.key_column and not a.attisdropped)
  from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
 where (n.nspname, c.relname) = (s.table_schema, s.table_name);

-- Hold digests name their table by registry id and their columns by number too, so a
-- rename since the hold began is no violation.
alter table privacy.hold_digests
    add column table_id integer references privacy.protected_tables (id) on delete set null,
    add column attnums smallint[];
comment on column privacy.hold_digests.table_id is 'The protected table (table_schema and table_name are its names when the hold began).';
comment on column privacy.hold_digests.attnums is 'The numbers of "columns" when the hold began: verification reads each by number, under its name then.';
update privacy.hold_digests d set table_id = p.id,
       attnums = case when d.columns is not null then (select pg_catalog.array_agg(a.attnum order by u.i)
                                                         from pg_catalog.unnest(d.columns) with ordinality u(col, i)
                                                         left join pg_catalog.pg_attribute a on a.attrelid = p.relid and a.attname = u.col and not a.attisdropped) end
  from privacy.protected_tables p where (p.table_schema, p.table_name) = (d.table_schema, d.table_name);
