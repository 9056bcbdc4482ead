/**
 * @pgha/client: a `pg.Pool` that follows the current pgha primary through etcd.
 * May import @pgha/core, pg, etcd3 and eventemitter3.
 */
export {};
