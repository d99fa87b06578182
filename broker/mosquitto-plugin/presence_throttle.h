/*
 * Presence fan-out at a bounded rate per publisher, sans-IO (the caller passes the time
 * in): the C twin of tether/throttle.py (Throttle) and tether/ratelimit.py (RateLimiter),
 * with the embedded broker's figures (broker/embedded.py PRESENCE_*). Only libc; the
 * Mosquitto plugin (tether_console_auth.c) and the test harness
 * (tests/support/presence_throttle_harness.c, run by tests/test_presence_throttle_plugin.py)
 * call it.
 *
 * Presence is retained state: a reader only ever needs an agent's newest document. So an
 * update over its publisher's rate is not dropped (the last one of a burst would be lost
 * and the agent shown stale) but held, one per (publisher, topic), replaced by anything
 * newer and released in order when the publisher's token bucket refills. A publisher
 * with updates held has every further one held too (no jumping its own queue).
 *
 * Memory is bounded: at most max_keys token buckets (past that the least recently seen
 * key is forgotten and starts again with a full bucket), at most max_keys publishers with
 * updates held (past that the one held longest loses its updates), at most max_topics
 * updates held per publisher (past that its oldest held one is dropped). Each held update
 * is a copy of topic and payload (so at most max_keys * max_topics payloads).
 */
#ifndef TETHER_PRESENCE_THROTTLE_H
#define TETHER_PRESENCE_THROTTLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The same figures as broker/embedded.py (a test checks that they agree). */
#define PT_RATE 0.5          /* PRESENCE_RATE: updates per second per publisher */
#define PT_BURST 10          /* PRESENCE_BURST */
#define PT_PUBLISHERS 4096   /* PRESENCE_PUBLISHERS: buckets kept, publishers held */
#define PT_HELD_TOPICS 4     /* PRESENCE_HELD_TOPICS: held updates per publisher */

/* Internal: an entry of a map from string keys, kept in an order (a doubly linked list). */
struct pt_entry {
	char *key;
	uint64_t hash;
	struct pt_entry *hnext;       /* the next entry in its hash slot */
	struct pt_entry *prev, *next; /* the map's order, oldest first */
};

struct pt_map {
	struct pt_entry **slots;
	size_t nslots;  /* a power of two */
	size_t count;
	struct pt_entry *head, *tail;
};

/* Per-key token buckets: `rate` tokens per second, up to `burst` saved (RateLimiter). */
struct pt_limiter {
	double rate, burst;
	size_t max_keys;
	struct pt_map buckets;  /* least recently seen first */
	uint64_t dropped;       /* events refused so far, all keys */
};

/* A held update: copies of what the publisher sent. */
struct pt_update {
	char *topic;
	void *payload;
	uint32_t payloadlen;
	uint8_t qos;
	bool retain;
};

struct pt_throttle {
	struct pt_limiter limiter;
	size_t max_keys, max_topics;
	struct pt_map held;     /* publishers with updates held, in the order they were first held */
	size_t pending;         /* updates held now, all publishers */
	uint64_t held_total;    /* updates held so far (each replaced or released later) */
	uint64_t discarded;     /* held updates replaced by a newer one or pushed out */
};

/* 0, or -1 (bad arguments: rate must be > 0, burst and max_keys >= 1; or no memory). */
int pt_limiter_init(struct pt_limiter *l, double rate, unsigned burst, size_t max_keys);
/* Take a token from key's bucket at time now (seconds, monotonic): 1 allowed, 0 refused,
 * -1 out of memory (nothing taken). */
int pt_limiter_allow(struct pt_limiter *l, const char *key, double now);
size_t pt_limiter_count(const struct pt_limiter *l);
void pt_limiter_free(struct pt_limiter *l);

/* 0, or -1 (bad arguments: max_topics must be >= 1 as well; or no memory). */
int pt_init(struct pt_throttle *t, double rate, unsigned burst, size_t max_keys, size_t max_topics);

enum pt_verdict {
	PT_SEND,   /* send it now */
	PT_HELD,   /* a copy is held for pt_release; drop the original */
	PT_NOMEM,  /* nothing held; the caller decides */
};

/* An update from publisher `key` on `topic` at time `now`. */
enum pt_verdict pt_offer(struct pt_throttle *t, const char *key, const char *topic,
                         const void *payload, uint32_t payloadlen, uint8_t qos, bool retain,
                         double now);

/* Passes each held update whose publisher has a token again to emit, oldest first per
 * publisher, publishers in the order they were first held, then frees it (emit must copy
 * what it keeps). Returns how many were released. */
size_t pt_release(struct pt_throttle *t, double now,
                  void (*emit)(void *ctx, const struct pt_update *update), void *ctx);

/* Updates held now. */
size_t pt_pending(const struct pt_throttle *t);

void pt_free(struct pt_throttle *t);

#endif
