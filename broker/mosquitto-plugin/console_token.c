/* The console-login decision without Mosquitto: see console_token.h. */
#include "console_token.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#define TS_NONCE_LEN (8 + TC_NONCE_LEN)
#define SIG_LEN 64
#define B64_KEY_MAX 127

int tc_parse_key_line(const char *line, struct tc_key *out)
{
	char name[TC_MAX_NAME + 2], b64[B64_KEY_MAX + 1];
	unsigned char pk[TC_PUBLIC_KEY_LEN + 1];
	size_t pk_len = 0;

	if(sscanf(line, "%65s %127s", name, b64) != 2 || strlen(name) > TC_MAX_NAME) return -1;
	if(sodium_base642bin(pk, sizeof(pk), b64, strlen(b64), NULL, &pk_len, NULL,
				sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 || pk_len != TC_PUBLIC_KEY_LEN){
		return -1;
	}
	memcpy(out->name, name, strlen(name) + 1);
	memcpy(out->pk, pk, TC_PUBLIC_KEY_LEN);
	return 0;
}

int tc_parse(const char *password, struct tc_token *out)
{
	const size_t prefix = strlen(TC_PREFIX);
	unsigned char raw[TC_TOKEN_LEN + 1];
	size_t raw_len = 0;
	uint64_t ts = 0;

	if(strncmp(password, TC_PREFIX, prefix)) return -1;
	if(sodium_base642bin(raw, sizeof(raw), password + prefix, strlen(password + prefix), NULL,
				&raw_len, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 || raw_len != TC_TOKEN_LEN){
		return -1;
	}
	for(int i = 0; i < 8; i++) ts = (ts << 8) | raw[i];
	if(ts > INT64_MAX) return -1;  /* never within the skew of a clock */
	out->ts = (int64_t)ts;
	memcpy(out->raw, raw, TC_TOKEN_LEN);
	return 0;
}

int tc_verify(const struct tc_token *token, const char *username, const char *client_id,
              const unsigned char pk[TC_PUBLIC_KEY_LEN])
{
	/* DOMAIN 0 username 0 client_id 0 ts nonce; the names are at most TC_MAX_NAME bytes. */
	unsigned char msg[sizeof(TC_DOMAIN) + 2 * (TC_MAX_NAME + 1) + TS_NONCE_LEN];
	const size_t user_len = strlen(username), id_len = strlen(client_id);
	size_t n = 0;

	if(user_len > TC_MAX_NAME || id_len > TC_MAX_NAME) return 0;
	memcpy(msg, TC_DOMAIN, sizeof(TC_DOMAIN));  /* with its 0 */
	n += sizeof(TC_DOMAIN);
	memcpy(msg + n, username, user_len + 1);
	n += user_len + 1;
	memcpy(msg + n, client_id, id_len + 1);
	n += id_len + 1;
	memcpy(msg + n, token->raw, TS_NONCE_LEN);
	n += TS_NONCE_LEN;
	return crypto_sign_verify_detached(token->raw + TS_NONCE_LEN, msg, n, pk) == 0;
}

static struct tc_seen identity(const struct tc_token *token)
{
	struct tc_seen id;
	id.ts = token->ts;
	memcpy(id.nonce, token->raw + 8, TC_NONCE_LEN);
	return id;
}

static int same(const struct tc_seen *a, const struct tc_seen *b)
{
	return a->ts == b->ts && !memcmp(a->nonce, b->nonce, TC_NONCE_LEN);
}

static struct tc_slot *find_slot(struct tc_table *table, const char *name)
{
	for(size_t i = 0; i < table->count; i++){
		if(!strcmp(table->slots[i].name, name)) return &table->slots[i];
	}
	return NULL;
}

/* Every token this slot took is stale by its ts and no connection needs it: its record
 * may go (or serve another slot). */
static int idle(const struct tc_slot *slot, int64_t now)
{
	return !slot->live && slot->newest < now - TC_FORGET_AFTER;
}

static struct tc_slot *new_slot(struct tc_table *table, const char *name, int64_t now)
{
	struct tc_slot *slot = NULL;

	if(strlen(name) > TC_MAX_NAME) return NULL;
	for(size_t i = 0; i < table->count && !slot; i++){
		if(idle(&table->slots[i], now)) slot = &table->slots[i];
	}
	if(!slot){
		if(table->count == table->cap){
			size_t cap = table->cap ? table->cap * 2 : 8;
			struct tc_slot *grown = realloc(table->slots, cap * sizeof(*grown));
			if(!grown) return NULL;
			table->slots = grown;
			table->cap = cap;
		}
		slot = &table->slots[table->count++];
	}
	memset(slot, 0, sizeof(*slot));
	memcpy(slot->name, name, strlen(name) + 1);
	slot->floor = INT64_MIN;
	slot->newest = INT64_MIN;
	return slot;
}

/* Refuse every token at or below ts from now on: the slot need not remember them. */
static void raise_floor(struct tc_slot *slot, int64_t ts)
{
	if(ts > slot->floor) slot->floor = ts;
	for(size_t i = 0; i < slot->count;){
		if(slot->seen[i].ts <= slot->floor) slot->seen[i] = slot->seen[--slot->count];
		else i++;
	}
}

/* The highest ts of a token of this slot that is stale by now (INT64_MIN if none). */
static int64_t newest_stale(const struct tc_slot *slot, int64_t now)
{
	int64_t found = INT64_MIN;
	for(size_t i = 0; i < slot->count; i++){
		if(slot->seen[i].ts < now - TC_FORGET_AFTER && slot->seen[i].ts > found) found = slot->seen[i].ts;
	}
	return found;
}

static int64_t oldest(const struct tc_slot *slot)
{
	int64_t found = INT64_MAX;
	for(size_t i = 0; i < slot->count; i++){
		if(slot->seen[i].ts < found) found = slot->seen[i].ts;
	}
	return found;
}

static enum tc_verdict take(struct tc_slot *slot, const struct tc_seen *id, int64_t now)
{
	if(id->ts <= slot->floor) return TC_CROWDED;
	for(size_t i = 0; i < slot->count; i++){
		if(same(&slot->seen[i], id)) return TC_REPLAYED;
	}
	if(slot->count == TC_PER_SLOT) raise_floor(slot, newest_stale(slot, now));
	if(slot->count == TC_PER_SLOT){
		if(id->ts <= oldest(slot)) return TC_CROWDED;  /* it would be among those to go */
		raise_floor(slot, oldest(slot));
	}
	slot->seen[slot->count++] = *id;
	if(id->ts > slot->newest) slot->newest = id->ts;
	return TC_ACCEPT;
}

enum tc_verdict tc_check(struct tc_table *table, const unsigned char *pk, const char *username,
                         const char *client_id, const char *password, int64_t now, const void *client)
{
	struct tc_token token;
	struct tc_seen id;
	struct tc_slot *slot;
	enum tc_verdict verdict;

	if(!pk || !username || !client_id || !password || strcmp(client_id, username)) return TC_NO_KEY;
	if(tc_parse(password, &token)) return TC_MALFORMED;
	if(!tc_verify(&token, username, client_id, pk)) return TC_BAD_SIGNATURE;
	id = identity(&token);
	slot = find_slot(table, username);
	if(slot && client && slot->live == client && same(&slot->live_token, &id)) return TC_RECHECK;
	if(token.ts > now + TC_SKEW || token.ts < now - TC_SKEW) return TC_STALE;
	if(!slot) slot = new_slot(table, username, now);
	if(!slot) return TC_NOMEM;
	verdict = take(slot, &id, now);
	if(verdict == TC_ACCEPT){
		slot->live = client;
		slot->live_token = id;
	}
	return verdict;
}

void tc_disconnected(struct tc_table *table, const void *client)
{
	for(size_t i = 0; i < table->count; i++){
		if(table->slots[i].live == client) table->slots[i].live = NULL;
	}
}

size_t tc_remembered(const struct tc_table *table)
{
	size_t n = 0;
	for(size_t i = 0; i < table->count; i++) n += table->slots[i].count;
	return n;
}

void tc_table_free(struct tc_table *table)
{
	free(table->slots);
	table->slots = NULL;
	table->count = table->cap = 0;
}
