-- A microbox database of schema 3, written by the store code of commit c3bdae9
-- (boxes.insert and pools.put, no VM): `pending`, `image_digest`, `pool` and
-- `spare_key` ride in the spec JSON as _pending_create, image_digest, _pool and
-- _spare_key. Rows: created (full spec, image digest), a pending create being
-- started, a pool's spare, running, paused, stopped (no digest, last_error),
-- error. tests/unit/test_store_migration.py loads it and migrates it.
BEGIN TRANSACTION;
CREATE TABLE boxes (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL UNIQUE,
        image        TEXT NOT NULL,
        spec         TEXT NOT NULL,
        status       TEXT NOT NULL,
        auto_remove  INTEGER NOT NULL DEFAULT 0,
        created_at   REAL NOT NULL,
        started_at   REAL,
        finished_at  REAL,
        pid          INTEGER,
        pid_start    REAL,
        last_error   TEXT
    );
INSERT INTO "boxes" VALUES('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa','made','busybox','{"accel": "auto", "add_hosts": ["db:10.0.0.5"], "allow_cidrs": ["10.1.0.0/16"], "allow_hosts": ["example.com", "*.pypi.org"], "allow_private": false, "cold": false, "cpus": 2, "deny_all": true, "env": {"E": "", "K": "v"}, "image": "busybox", "image_digest": "sha256-1111111111111111111111111111111111111111111111111111111111111111", "kernel": null, "labels": {"k": "", "team": "x"}, "memory_mib": 512, "net": "user", "ports": [{"guest_port": 80, "host_ip": "127.0.0.1", "host_port": 8080, "proto": "tcp"}, {"guest_port": 53, "host_ip": "127.0.0.1", "host_port": 5353, "proto": "udp"}], "user": "1000:1000", "workdir": "/srv"}','created',0,1700000001.5,NULL,NULL,NULL,NULL,NULL);
INSERT INTO "boxes" VALUES('bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb','pending-one','debian','{"_pending_create": true, "accel": "auto", "add_hosts": [], "allow_cidrs": [], "allow_hosts": [], "allow_private": false, "cold": true, "cpus": 1, "deny_all": false, "env": {}, "image": "debian", "image_digest": "sha256-2222222222222222222222222222222222222222222222222222222222222222", "kernel": null, "labels": {}, "memory_mib": 256, "net": "user", "ports": [], "user": null, "workdir": null}','starting',1,1700000002.0,NULL,NULL,4242,123.25,NULL);
INSERT INTO "boxes" VALUES('cccccccccccccccccccccccccccccccc','spare-0badf00d','busybox','{"_pool": "0123456789ab", "_spare_key": "ffffffffffffffffffffffff", "accel": "auto", "add_hosts": [], "allow_cidrs": [], "allow_hosts": [], "allow_private": false, "cold": false, "cpus": 1, "deny_all": false, "env": {}, "image": "busybox", "image_digest": "sha256-1111111111111111111111111111111111111111111111111111111111111111", "kernel": null, "labels": {}, "memory_mib": 256, "net": "none", "ports": [], "user": null, "workdir": null}','spare',1,1700000003.0,1700000003.5,NULL,4343,456.5,NULL);
INSERT INTO "boxes" VALUES('dddddddddddddddddddddddddddddddd','web','busybox','{"accel": "auto", "add_hosts": [], "allow_cidrs": [], "allow_hosts": [], "allow_private": false, "cold": false, "cpus": 1, "deny_all": false, "env": {}, "image": "busybox", "image_digest": "sha256-1111111111111111111111111111111111111111111111111111111111111111", "kernel": null, "labels": {}, "memory_mib": 256, "net": "user", "ports": [{"guest_port": 8000, "host_ip": "127.0.0.1", "host_port": 8081, "proto": "tcp"}], "user": null, "workdir": null}','running',0,1700000004.0,1700000004.5,NULL,4444,789.75,NULL);
INSERT INTO "boxes" VALUES('eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee','held','busybox','{"accel": "tcg", "add_hosts": [], "allow_cidrs": [], "allow_hosts": [], "allow_private": false, "cold": false, "cpus": 1, "deny_all": false, "env": {}, "image": "busybox", "image_digest": "sha256-1111111111111111111111111111111111111111111111111111111111111111", "kernel": "/opt/vmlinux", "labels": {}, "memory_mib": 256, "net": "user", "ports": [], "user": null, "workdir": null}','paused',0,1700000005.0,1700000005.5,NULL,4545,1.0,NULL);
INSERT INTO "boxes" VALUES('11111111111111111111111111111111','off','busybox','{"accel": "auto", "add_hosts": [], "allow_cidrs": [], "allow_hosts": [], "allow_private": true, "cold": false, "cpus": 1, "deny_all": false, "env": {}, "image": "busybox", "kernel": null, "labels": {}, "memory_mib": 256, "net": "user", "ports": [], "user": null, "workdir": null}','stopped',0,1700000006.0,1700000006.5,1700000007.0,NULL,NULL,'the agent never answered');
INSERT INTO "boxes" VALUES('22222222222222222222222222222222','dead','busybox','{"accel": "auto", "add_hosts": [], "allow_cidrs": [], "allow_hosts": [], "allow_private": false, "cold": false, "cpus": 1, "deny_all": false, "env": {}, "image": "busybox", "image_digest": "sha256-2222222222222222222222222222222222222222222222222222222222222222", "kernel": null, "labels": {}, "memory_mib": 256, "net": "user", "ports": [], "user": null, "workdir": null}','error',0,1700000008.0,1700000008.5,NULL,NULL,NULL,'its process has exited');
CREATE TABLE images (
        name        TEXT PRIMARY KEY,
        digest      TEXT NOT NULL,
        size        INTEGER NOT NULL,
        source      TEXT NOT NULL,
        created_at  REAL NOT NULL
    , config TEXT NOT NULL DEFAULT '{}', layers TEXT NOT NULL DEFAULT '[]', image_id TEXT);
CREATE TABLE pools (
        id          TEXT PRIMARY KEY,
        spec        TEXT NOT NULL,
        size        INTEGER NOT NULL,
        created_at  REAL NOT NULL
    );
INSERT INTO "pools" VALUES('0123456789ab','{"accel": "auto", "add_hosts": [], "allow_cidrs": [], "allow_hosts": [], "allow_private": false, "cold": false, "cpus": 1, "deny_all": false, "env": {}, "image": "busybox", "kernel": null, "labels": {}, "memory_mib": 256, "net": "none", "ports": [], "user": null, "workdir": null}',2,1700000000.0);
CREATE TABLE schema_migrations ( version INTEGER PRIMARY KEY, applied_at REAL NOT NULL);
INSERT INTO "schema_migrations" VALUES(1,1.79668738543268013e+09);
INSERT INTO "schema_migrations" VALUES(2,1.79668738543294358254e+09);
INSERT INTO "schema_migrations" VALUES(3,1.79668738543300747869e+09);
COMMIT;
