/*
 * libFuzzer harness for the Mosquitto plugin's console-login decision
 * (broker/mosquitto-plugin/console_token.c), without Mosquitto. Built and run by run.sh.
 *
 * Every input is a script of operations on one fresh table, with a model of what the
 * table must do beside it:
 *
 *   RAW     fuzzed bytes as a password (and as a console-keys line) for a slot: never a
 *           login (no fuzzed string carries a valid signature), never a crash
 *   SIGN    a token the harness signs for one of three slots, with a fuzzed ts offset,
 *           nonce and connection, sometimes spoiled (signature bit, other key, other
 *           client id)
 *   REPLAY  one of the last tokens again, from a fuzzed connection
 *   DISCONNECT, CLOCK (forward, or back by at most TC_SKEW from the latest time)
 *
 * and after each one the properties the plugin promises: a token logs in at most once;
 * only within TC_SKEW of now; a re-check passes only for the live connection that
 * presented it; a slot's fresh token newer than all it took logs in whatever other
 * slots (or it) did; a spoiled token never logs in; the table stays bounded. A broken
 * property aborts, which libFuzzer reports as a crash.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "console_token.h"

#define USERS 3
#define MAX_OPS 64
#define RECENT 16
#define T0 1700000000

#define CHECK(cond) do{ if(!(cond)){ \
	fprintf(stderr, "property broken at %s:%d: %s\n", __FILE__, __LINE__, #cond); abort(); } }while(0)

static const char *names[USERS] = {
	"ann.c", "bob.c",
	"a-name-of-sixty-four-bytes-the-longest-a-key-line-may-have-xx.c",
};
static unsigned char pks[USERS][crypto_sign_PUBLICKEYBYTES];
static unsigned char sks[USERS][crypto_sign_SECRETKEYBYTES];

struct ident {
	int user;
	int64_t ts;
	unsigned char nonce;  /* the nonce is this byte 16 times: collisions are likely */
};

struct sent {
	struct ident id;
	char password[160];
};

struct model {
	struct ident accepted[MAX_OPS];
	size_t n_accepted;
	int has_newest[USERS];
	int64_t newest[USERS];
	int live[USERS];
	uintptr_t live_client[USERS];
	struct ident live_id[USERS];
	struct sent recent[RECENT];
	size_t n_recent;
	int64_t now, latest;
};

struct input {
	const uint8_t *data;
	size_t size;
};

static uint8_t byte(struct input *in)
{
	uint8_t b = 0;
	if(in->size){
		b = *in->data++;
		in->size--;
	}
	return b;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if(sodium_init() < 0) abort();
	for(int u = 0; u < USERS; u++){
		unsigned char seed[crypto_sign_SEEDBYTES];
		memset(seed, 'k' + u, sizeof(seed));
		crypto_sign_seed_keypair(pks[u], sks[u], seed);
	}
	return 0;
}

static int same_ident(const struct ident *a, const struct ident *b)
{
	return a->user == b->user && a->ts == b->ts && a->nonce == b->nonce;
}

static int accepted_before(const struct model *m, const struct ident *id)
{
	for(size_t i = 0; i < m->n_accepted; i++){
		if(same_ident(&m->accepted[i], id)) return 1;
	}
	return 0;
}

/* The password for id, signed by signer's key for client_id. */
static void make_token(const struct ident *id, int signer, const char *client_id, char out[160])
{
	unsigned char raw[TC_TOKEN_LEN], msg[256];
	size_t n = 0;
	const char *user = names[id->user];

	for(int i = 0; i < 8; i++) raw[i] = (unsigned char)((uint64_t)id->ts >> (56 - 8 * i));
	memset(raw + 8, id->nonce, TC_NONCE_LEN);
	memcpy(msg, TC_DOMAIN, sizeof(TC_DOMAIN));
	n += sizeof(TC_DOMAIN);
	memcpy(msg + n, user, strlen(user) + 1);
	n += strlen(user) + 1;
	memcpy(msg + n, client_id, strlen(client_id) + 1);
	n += strlen(client_id) + 1;
	memcpy(msg + n, raw, 8 + TC_NONCE_LEN);
	n += 8 + TC_NONCE_LEN;
	crypto_sign_detached(raw + 8 + TC_NONCE_LEN, NULL, msg, n, sks[signer]);
	memcpy(out, TC_PREFIX, strlen(TC_PREFIX));
	sodium_bin2base64(out + strlen(TC_PREFIX), 160 - strlen(TC_PREFIX), raw, sizeof(raw),
	                  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

static void check_bounds(const struct tc_table *table)
{
	CHECK(table->count <= USERS);  /* only a registered key's signature makes a record */
	for(size_t i = 0; i < table->count; i++){
		const struct tc_slot *slot = &table->slots[i];
		CHECK(slot->count <= TC_PER_SLOT);
		for(size_t j = 0; j < slot->count; j++) CHECK(slot->seen[j].ts > slot->floor);
	}
	CHECK(tc_remembered(table) <= USERS * TC_PER_SLOT);
}

/* A well-signed token presented by `client`: what the table said against the model. */
static void present(struct tc_table *table, struct model *m, const struct ident *id,
                    const char *password, uintptr_t client)
{
	const char *user = names[id->user];
	enum tc_verdict v = tc_check(table, pks[id->user], user, user, password, m->now, (const void *)client);
	int u = id->user;
	int in_window = id->ts <= m->now + TC_SKEW && id->ts >= m->now - TC_SKEW;
	int live = m->live[u] && m->live_client[u] == client && same_ident(&m->live_id[u], id);

	if(live){
		CHECK(v == TC_RECHECK);
		return;
	}
	CHECK(v != TC_RECHECK);
	if(!in_window) CHECK(v == TC_STALE);
	if(v == TC_ACCEPT){
		CHECK(in_window);
		CHECK(!accepted_before(m, id));  /* each token logs in once */
		if(m->n_accepted < MAX_OPS) m->accepted[m->n_accepted++] = *id;
		if(!m->has_newest[u] || id->ts > m->newest[u]) m->newest[u] = id->ts;
		m->has_newest[u] = 1;
		m->live[u] = 1;
		m->live_client[u] = client;
		m->live_id[u] = *id;
	}else if(in_window && !accepted_before(m, id) && (!m->has_newest[u] || id->ts > m->newest[u])){
		CHECK(v == TC_ACCEPT);  /* nothing any slot did crowds out a slot's newest token */
	}else if(in_window){
		CHECK(v == TC_REPLAYED || v == TC_CROWDED);
	}
}

static void op_raw(struct tc_table *table, struct model *m, struct input *in)
{
	size_t len = byte(in);
	uint8_t who = byte(in);
	char text[256];
	struct tc_token token;
	struct tc_key key;
	const char *user;
	enum tc_verdict v;

	if(len > in->size) len = in->size;
	memcpy(text, in->data, len);
	text[len] = 0;
	in->data += len;
	in->size -= len;
	user = who % 4 < USERS ? names[who % 4] : text;
	v = tc_check(table, who % 4 < USERS ? pks[who % 4] : NULL, user, user, text, m->now,
	             (const void *)(uintptr_t)(1 + who / 4 % 4));
	CHECK(v != TC_ACCEPT && v != TC_RECHECK);
	if(!tc_parse(text, &token)){
		CHECK(strlen(text) == strlen(TC_PREFIX) + 118);
		CHECK(token.ts >= 0);
	}
	if(!tc_parse_key_line(text, &key)){
		CHECK(strlen(key.name) >= 1 && strlen(key.name) <= TC_MAX_NAME);
	}
}

static void op_sign(struct tc_table *table, struct model *m, struct input *in)
{
	struct ident id;
	uint8_t how = byte(in), flags = byte(in);
	int offset = (int)(int8_t)byte(in) * 3;  /* -384 .. 381 s */
	uintptr_t client = 1 + byte(in) % 4;
	struct sent *s;
	char password[160];

	id.user = how % USERS;
	id.ts = m->now + offset;
	id.nonce = (uint8_t)(how / USERS % 8);
	if(flags % 4 == 1){  /* signed by another slot's key */
		enum tc_verdict v;
		make_token(&id, (id.user + 1) % USERS, names[id.user], password);
		v = tc_check(table, pks[id.user], names[id.user], names[id.user], password, m->now, (const void *)client);
		CHECK(v == TC_BAD_SIGNATURE);
		return;
	}
	if(flags % 4 == 2){  /* for another client id than the slot's */
		enum tc_verdict v;
		const char *other = names[(id.user + 1) % USERS];
		make_token(&id, id.user, other, password);
		v = tc_check(table, pks[id.user], names[id.user], other, password, m->now, (const void *)client);
		CHECK(v == TC_NO_KEY);
		return;
	}
	make_token(&id, id.user, names[id.user], password);
	if(flags % 4 == 3){  /* one bit of the signature (or the nonce) flipped */
		unsigned char raw[TC_TOKEN_LEN];
		size_t at = 8 + (size_t)(flags / 4) % (TC_TOKEN_LEN - 8);
		CHECK(sodium_base642bin(raw, sizeof(raw), password + 4, strlen(password + 4), NULL, NULL, NULL,
		                        sodium_base64_VARIANT_URLSAFE_NO_PADDING) == 0);
		raw[at] ^= (unsigned char)(1u << (flags % 8));
		sodium_bin2base64(password + 4, sizeof(password) - 4, raw, sizeof(raw), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
		CHECK(tc_check(table, pks[id.user], names[id.user], names[id.user], password, m->now,
		               (const void *)client) == TC_BAD_SIGNATURE);
		return;
	}
	present(table, m, &id, password, client);
	s = &m->recent[m->n_recent++ % RECENT];
	s->id = id;
	memcpy(s->password, password, sizeof(password));
}

static void op_replay(struct tc_table *table, struct model *m, struct input *in)
{
	uint8_t which = byte(in);
	const struct sent *s;
	if(!m->n_recent) return;
	s = &m->recent[which % (m->n_recent < RECENT ? m->n_recent : RECENT)];
	present(table, m, &s->id, s->password, 1 + (uintptr_t)(which / RECENT % 4));
}

static void op_disconnect(struct tc_table *table, struct model *m, struct input *in)
{
	uintptr_t client = 1 + byte(in) % 4;
	tc_disconnected(table, (const void *)client);
	for(int u = 0; u < USERS; u++){
		if(m->live_client[u] == client) m->live[u] = 0;
	}
}

static void op_clock(struct model *m, struct input *in)
{
	int step = (int)(int8_t)byte(in) * 4;  /* -512 .. 508 s */
	m->now += step;
	if(m->now < m->latest - TC_SKEW) m->now = m->latest - TC_SKEW;  /* a clock steps back a little */
	if(m->now > m->latest) m->latest = m->now;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tc_table table = {0};
	static struct model m;
	struct input in = {data, size};

	memset(&m, 0, sizeof(m));
	m.now = m.latest = T0;
	for(int ops = 0; in.size && ops < MAX_OPS; ops++){
		switch(byte(&in) % 5){
		case 0: op_raw(&table, &m, &in); break;
		case 1: op_sign(&table, &m, &in); break;
		case 2: op_replay(&table, &m, &in); break;
		case 3: op_disconnect(&table, &m, &in); break;
		default: op_clock(&m, &in); break;
		}
		check_bounds(&table);
	}
	tc_table_free(&table);
	return 0;
}
