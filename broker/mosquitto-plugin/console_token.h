/*
 * The console-login decision of tether's Mosquitto plugin, without Mosquitto: token
 * parsing, signature check and the per-slot table of taken tokens (docs/protocol.md
 * section 13.1; tether/console_login.py is the reference). Only libsodium; the plugin
 * (tether_console_auth.c) and the fuzz harness (tools/fuzz_plugin/) call it.
 *
 * Replay protection with bounded memory, per console slot: a slot remembers the (ts,
 * nonce) of the TC_PER_SLOT newest tokens it accepted and a floor, the highest ts it has
 * let go of. A token is accepted only if its ts is above the floor and its (ts, nonce) is
 * not remembered; so every accepted token with ts > floor is remembered, every other one
 * is refused, and each token logs in once. (The signature is not part of a token's
 * identity: a re-encoded or re-signed copy of a taken token is still a replay.) A slot
 * that logs in more than TC_PER_SLOT times within TC_FORGET_AFTER raises its own floor;
 * it cannot crowd out another slot, whose table is its own.
 */
#ifndef TETHER_CONSOLE_TOKEN_H
#define TETHER_CONSOLE_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#define TC_PREFIX "tc1."
#define TC_DOMAIN "tether-console-mqtt-v1"
#define TC_SKEW 120
#define TC_FORGET_AFTER (2 * TC_SKEW)  /* a token is remembered until this long after its ts */
#define TC_TOKEN_LEN (8 + 16 + 64)
#define TC_MAX_NAME 64
#ifndef TC_PER_SLOT
#define TC_PER_SLOT 64  /* (the fuzz harness builds with a small one, to reach its limits) */
#endif
#define TC_NONCE_LEN 16
#define TC_PUBLIC_KEY_LEN 32

struct tc_token {
	int64_t ts;
	unsigned char raw[TC_TOKEN_LEN];  /* ts (8, big-endian) || nonce (16) || sig (64) */
};

struct tc_key {
	char name[TC_MAX_NAME + 1];
	unsigned char pk[TC_PUBLIC_KEY_LEN];
};

/* A token's identity within its slot: what the signature covers besides the names. */
struct tc_seen {
	int64_t ts;
	unsigned char nonce[TC_NONCE_LEN];
};

/* One console slot's taken tokens. */
struct tc_slot {
	char name[TC_MAX_NAME + 1];
	int64_t floor;       /* every token with ts <= floor is refused */
	int64_t newest;      /* the highest ts accepted: the slot is idle once it is forgotten */
	const void *live;    /* the connection that presented live_token, or NULL */
	struct tc_seen live_token;
	size_t count;
	struct tc_seen seen[TC_PER_SLOT];
};

struct tc_table {
	struct tc_slot *slots;
	size_t count, cap;
};

enum tc_verdict {
	TC_ACCEPT,      /* a new token, taken now */
	TC_RECHECK,     /* the live connection that presented it, checked again after a reload */
	TC_NO_KEY,      /* no registered key, or client id != username, or not a token */
	TC_MALFORMED,
	TC_BAD_SIGNATURE,
	TC_STALE,       /* ts more than TC_SKEW from now */
	TC_REPLAYED,    /* taken before */
	TC_CROWDED,     /* not newer than what the slot has let go of or would have to */
	TC_NOMEM,
};

/* "NAME KEY" (KEY base64url of 32 bytes, NAME at most TC_MAX_NAME bytes): 0 and *out, or -1. */
int tc_parse_key_line(const char *line, struct tc_key *out);

/* "tc1." base64url(88 bytes): 0 and *out, or -1. */
int tc_parse(const char *password, struct tc_token *out);

/* 1 iff the token's signature verifies for username and client_id under pk. */
int tc_verify(const struct tc_token *token, const char *username, const char *client_id,
              const unsigned char pk[TC_PUBLIC_KEY_LEN]);

/* The whole decision for a CONNECT to a console slot. pk is the slot's registered key or
 * NULL; client identifies the connection (for a re-check after a reload). */
enum tc_verdict tc_check(struct tc_table *table, const unsigned char *pk, const char *username,
                         const char *client_id, const char *password, int64_t now, const void *client);

/* The connection `client` has gone: its token no longer passes a re-check. */
void tc_disconnected(struct tc_table *table, const void *client);

/* Tokens remembered across all slots (for tests and bounds). */
size_t tc_remembered(const struct tc_table *table);

void tc_table_free(struct tc_table *table);

#endif
