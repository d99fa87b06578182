/* See presence_throttle.h. Mirrors tether/ratelimit.py and tether/throttle.py step for step. */
#define _POSIX_C_SOURCE 200809L  /* strdup */
#include "presence_throttle.h"

#include <stdlib.h>
#include <string.h>

/* ----- a map from string keys, in an order ----------------------------------------- */

static uint64_t hash_of(const char *key)
{
	uint64_t h = 1469598103934665603ULL;  /* FNV-1a */
	for(const unsigned char *p = (const unsigned char *)key; *p; p++){
		h ^= *p;
		h *= 1099511628211ULL;
	}
	return h;
}

static int map_init(struct pt_map *m, size_t max_count)
{
	size_t n = 16;
	while(n < 2 * max_count) n *= 2;  /* load factor at most 1/2 */
	memset(m, 0, sizeof(*m));
	m->slots = calloc(n, sizeof(*m->slots));
	if(!m->slots) return -1;
	m->nslots = n;
	return 0;
}

static struct pt_entry *map_find(const struct pt_map *m, const char *key)
{
	uint64_t h = hash_of(key);
	for(struct pt_entry *e = m->slots[h & (m->nslots - 1)]; e; e = e->hnext){
		if(e->hash == h && !strcmp(e->key, key)) return e;
	}
	return NULL;
}

static void list_unlink(struct pt_map *m, struct pt_entry *e)
{
	if(e->prev) e->prev->next = e->next; else m->head = e->next;
	if(e->next) e->next->prev = e->prev; else m->tail = e->prev;
	e->prev = e->next = NULL;
}

static void list_append(struct pt_map *m, struct pt_entry *e)
{
	e->prev = m->tail;
	e->next = NULL;
	if(m->tail) m->tail->next = e; else m->head = e;
	m->tail = e;
}

/* Takes e (its key already set, a copy the map now owns) at the back. */
static void map_append(struct pt_map *m, struct pt_entry *e)
{
	struct pt_entry **slot;
	e->hash = hash_of(e->key);
	slot = &m->slots[e->hash & (m->nslots - 1)];
	e->hnext = *slot;
	*slot = e;
	list_append(m, e);
	m->count++;
}

/* Unlinks e; the caller frees it and its key. */
static void map_remove(struct pt_map *m, struct pt_entry *e)
{
	struct pt_entry **p = &m->slots[e->hash & (m->nslots - 1)];
	while(*p != e) p = &(*p)->hnext;
	*p = e->hnext;
	list_unlink(m, e);
	m->count--;
}

static void map_move_to_end(struct pt_map *m, struct pt_entry *e)
{
	list_unlink(m, e);
	list_append(m, e);
}

/* ----- token buckets (tether/ratelimit.py) ----------------------------------------- */

struct bucket {
	struct pt_entry entry;  /* first: a struct pt_entry * is a struct bucket * */
	double tokens, at;
};

int pt_limiter_init(struct pt_limiter *l, double rate, unsigned burst, size_t max_keys)
{
	memset(l, 0, sizeof(*l));
	if(!(rate > 0) || burst < 1 || max_keys < 1) return -1;
	l->rate = rate;
	l->burst = (double)burst;
	l->max_keys = max_keys;
	return map_init(&l->buckets, max_keys);
}

static void free_bucket(struct pt_map *m, struct pt_entry *e)
{
	map_remove(m, e);
	free(e->key);
	free(e);
}

int pt_limiter_allow(struct pt_limiter *l, const char *key, double now)
{
	struct bucket *b = (struct bucket *)map_find(&l->buckets, key);
	if(!b){
		b = calloc(1, sizeof(*b));
		if(!b || !(b->entry.key = strdup(key))){
			free(b);
			return -1;
		}
		while(l->buckets.count >= l->max_keys) free_bucket(&l->buckets, l->buckets.head);
		b->tokens = l->burst;
		b->at = now;
		map_append(&l->buckets, &b->entry);
	}else{
		double elapsed = now - b->at;
		if(elapsed < 0) elapsed = 0;  /* a clock that steps back adds nothing */
		b->tokens += elapsed * l->rate;
		if(b->tokens > l->burst) b->tokens = l->burst;
		if(now > b->at) b->at = now;
		map_move_to_end(&l->buckets, &b->entry);
	}
	if(b->tokens >= 1.0){
		b->tokens -= 1.0;
		return 1;
	}
	l->dropped++;
	return 0;
}

size_t pt_limiter_count(const struct pt_limiter *l)
{
	return l->buckets.count;
}

void pt_limiter_free(struct pt_limiter *l)
{
	while(l->buckets.head) free_bucket(&l->buckets, l->buckets.head);
	free(l->buckets.slots);
	memset(l, 0, sizeof(*l));
}

/* ----- held updates (tether/throttle.py) ------------------------------------------- */

/* One publisher's held updates, oldest first (at most max_topics of them). */
struct held {
	struct pt_entry entry;  /* first */
	size_t count;
	struct pt_update updates[];
};

static void free_update(struct pt_update *u)
{
	free(u->topic);
	free(u->payload);
	memset(u, 0, sizeof(*u));
}

static void remove_update(struct held *h, size_t i)
{
	free_update(&h->updates[i]);
	memmove(&h->updates[i], &h->updates[i + 1], (h->count - i - 1) * sizeof(h->updates[0]));
	h->count--;
}

static void free_held(struct pt_throttle *t, struct held *h)
{
	for(size_t i = 0; i < h->count; i++) free_update(&h->updates[i]);
	t->pending -= h->count;
	map_remove(&t->held, &h->entry);
	free(h->entry.key);
	free(h);
}

int pt_init(struct pt_throttle *t, double rate, unsigned burst, size_t max_keys, size_t max_topics)
{
	memset(t, 0, sizeof(*t));
	if(max_topics < 1) return -1;
	if(pt_limiter_init(&t->limiter, rate, burst, max_keys)) return -1;
	if(map_init(&t->held, max_keys)){
		pt_limiter_free(&t->limiter);
		return -1;
	}
	t->max_keys = max_keys;
	t->max_topics = max_topics;
	return 0;
}

enum pt_verdict pt_offer(struct pt_throttle *t, const char *key, const char *topic,
                         const void *payload, uint32_t payloadlen, uint8_t qos, bool retain,
                         double now)
{
	struct held *h = (struct held *)map_find(&t->held, key);
	struct pt_update copy = {NULL, NULL, payloadlen, qos, retain};

	if(!h){
		int allowed = pt_limiter_allow(&t->limiter, key, now);
		if(allowed < 0) return PT_NOMEM;
		if(allowed) return PT_SEND;
	}
	/* Everything that can fail first, so a failure changes nothing. */
	copy.topic = strdup(topic);
	copy.payload = malloc(payloadlen ? payloadlen : 1);
	if(!copy.topic || !copy.payload){
		free_update(&copy);
		return PT_NOMEM;
	}
	if(payloadlen) memcpy(copy.payload, payload, payloadlen);
	if(!h){
		h = calloc(1, sizeof(*h) + t->max_topics * sizeof(h->updates[0]));
		if(!h || !(h->entry.key = strdup(key))){
			free(h);
			free_update(&copy);
			return PT_NOMEM;
		}
		while(t->held.count >= t->max_keys){
			struct held *oldest = (struct held *)t->held.head;
			t->discarded += oldest->count;
			free_held(t, oldest);
		}
		map_append(&t->held, &h->entry);
	}
	for(size_t i = 0; i < h->count; i++){
		if(!strcmp(h->updates[i].topic, topic)){
			/* the newest update goes to the back of its publisher's queue */
			remove_update(h, i);
			t->discarded++;
			t->pending--;
			break;
		}
	}
	if(h->count >= t->max_topics){
		remove_update(h, 0);
		t->discarded++;
		t->pending--;
	}
	h->updates[h->count++] = copy;
	t->pending++;
	t->held_total++;
	return PT_HELD;
}

size_t pt_release(struct pt_throttle *t, double now,
                  void (*emit)(void *ctx, const struct pt_update *update), void *ctx)
{
	size_t released = 0;
	struct pt_entry *e = t->held.head;
	while(e){
		struct held *h = (struct held *)e;
		e = e->next;
		/* On no memory for a bucket (-1) the update stays held for the next call. */
		while(h->count && pt_limiter_allow(&t->limiter, h->entry.key, now) == 1){
			emit(ctx, &h->updates[0]);
			remove_update(h, 0);
			t->pending--;
			released++;
		}
		if(!h->count) free_held(t, h);
	}
	return released;
}

size_t pt_pending(const struct pt_throttle *t)
{
	return t->pending;
}

void pt_free(struct pt_throttle *t)
{
	while(t->held.head) free_held(t, (struct held *)t->held.head);
	free(t->held.slots);
	pt_limiter_free(&t->limiter);
	memset(t, 0, sizeof(*t));
}
