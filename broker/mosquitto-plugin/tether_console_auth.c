/*
 * tether's Mosquitto 2.0 plugin: web console logins with one-time signed tokens.
 *
 * The browser console logs in to its slot NAME.c with a fresh token each time
 * (docs/protocol.md section 17.1; tether/console_login.py is the reference):
 *
 *   password = "tc1." base64url(ts (8 bytes, big-endian Unix seconds) || nonce (16) || sig (64))
 *   sig      = Ed25519(user key, "tether-console-mqtt-v1" 0 username 0 client_id 0 ts nonce)
 *
 * The public keys come from the console-keys file the authority writes next to passwd
 * and acl ("NAME.c KEY" lines, KEY base64url). A token is taken once, within 120 s of its
 * time; Mosquitto's re-check of a live connection after a reload passes again for the
 * connection that presented it. Other usernames are left to password_file.
 *
 *   plugin /usr/local/lib/tether/tether_console_auth.so
 *   plugin_opt_console_keys /etc/tether/broker/console-keys
 *
 * Build: cc -shared -fPIC -O2 -o tether_console_auth.so tether_console_auth.c -lsodium
 * (Debian: mosquitto-dev libsodium-dev).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <sodium.h>

#define PREFIX "tc1."
#define DOMAIN "tether-console-mqtt-v1"
#define SKEW 120
#define TOKEN_LEN (8 + 16 + 64)
#define MAX_NAME 64
#define SEEN 4096

struct key {
	char name[MAX_NAME + 1];
	unsigned char pk[crypto_sign_PUBLICKEYBYTES];
};

struct seen {
	unsigned char digest[16];
	time_t expires;                  /* 0: free */
	const struct mosquitto *client;  /* the live connection that presented it, or NULL */
};

static mosquitto_plugin_id_t *plugin_id;
static char *keys_path;
static struct key *keys;
static size_t key_count;
static struct seen seen[SEEN];

static void load_keys(void)
{
	FILE *f = fopen(keys_path, "r");
	struct key *loaded = NULL;
	size_t n = 0, cap = 0;
	char line[512];

	if(!f){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "tether: cannot read %s: no console logins", keys_path);
	}else{
		while(fgets(line, sizeof(line), f)){
			char name[MAX_NAME + 2], b64[128];
			unsigned char pk[crypto_sign_PUBLICKEYBYTES + 1];
			size_t pk_len = 0;
			if(sscanf(line, "%65s %127s", name, b64) != 2 || strlen(name) > MAX_NAME) continue;
			if(sodium_base642bin(pk, sizeof(pk), b64, strlen(b64), NULL, &pk_len, NULL,
						sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 || pk_len != crypto_sign_PUBLICKEYBYTES) continue;
			if(n == cap){
				struct key *grown;
				cap = cap ? cap * 2 : 16;
				grown = realloc(loaded, cap * sizeof(*loaded));
				if(!grown) break;
				loaded = grown;
			}
			memcpy(loaded[n].name, name, strlen(name) + 1);
			memcpy(loaded[n].pk, pk, crypto_sign_PUBLICKEYBYTES);
			n++;
		}
		fclose(f);
	}
	free(keys);
	keys = loaded;
	key_count = n;
	mosquitto_log_printf(MOSQ_LOG_INFO, "tether: %zu console key(s) from %s", n, keys_path);
}

static const unsigned char *key_of(const char *name)
{
	for(size_t i = 0; i < key_count; i++){
		if(!strcmp(keys[i].name, name)) return keys[i].pk;
	}
	return NULL;
}

static int ends_with_slot_suffix(const char *name)
{
	size_t n = strlen(name);
	return n > 2 && !strcmp(name + n - 2, ".c");
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *user = ed->username, *password = ed->password, *client_id;
	unsigned char raw[TOKEN_LEN + 1], digest[16];
	unsigned char *msg;
	size_t raw_len = 0, user_len, id_len, msg_len;
	const unsigned char *pk;
	uint64_t ts = 0;
	time_t now = time(NULL);
	struct seen *slot = NULL;
	int ok;
	(void)event;
	(void)userdata;

	if(!user || !ends_with_slot_suffix(user)) return MOSQ_ERR_PLUGIN_DEFER;
	/* A console slot: decided here, never by a password. */
	client_id = mosquitto_client_id(ed->client);
	pk = key_of(user);
	if(!password || !client_id || !pk || strcmp(client_id, user) || strncmp(password, PREFIX, strlen(PREFIX))) return MOSQ_ERR_AUTH;
	if(sodium_base642bin(raw, sizeof(raw), password + strlen(PREFIX), strlen(password + strlen(PREFIX)),
				NULL, &raw_len, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 || raw_len != TOKEN_LEN){
		return MOSQ_ERR_AUTH;
	}
	user_len = strlen(user);
	id_len = strlen(client_id);
	msg_len = strlen(DOMAIN) + 1 + user_len + 1 + id_len + 1 + 24;
	msg = malloc(msg_len);
	if(!msg) return MOSQ_ERR_NOMEM;
	memcpy(msg, DOMAIN, strlen(DOMAIN));
	msg[strlen(DOMAIN)] = 0;
	memcpy(msg + strlen(DOMAIN) + 1, user, user_len);
	msg[strlen(DOMAIN) + 1 + user_len] = 0;
	memcpy(msg + strlen(DOMAIN) + 2 + user_len, client_id, id_len);
	msg[strlen(DOMAIN) + 2 + user_len + id_len] = 0;
	memcpy(msg + strlen(DOMAIN) + 3 + user_len + id_len, raw, 24);
	ok = crypto_sign_verify_detached(raw + 24, msg, msg_len, pk) == 0;
	free(msg);
	if(!ok) return MOSQ_ERR_AUTH;

	crypto_generichash(digest, sizeof(digest), raw, TOKEN_LEN, NULL, 0);
	for(size_t i = 0; i < SEEN; i++){
		if(seen[i].expires && !memcmp(seen[i].digest, digest, sizeof(digest))){
			/* Taken before: only Mosquitto's re-check of that same connection passes. */
			return seen[i].client == ed->client ? MOSQ_ERR_SUCCESS : MOSQ_ERR_AUTH;
		}
	}
	for(int i = 0; i < 8; i++) ts = (ts << 8) | raw[i];
	if((int64_t)ts > (int64_t)now + SKEW || (int64_t)ts < (int64_t)now - SKEW) return MOSQ_ERR_AUTH;
	for(size_t i = 0; i < SEEN && !slot; i++){
		if(!seen[i].expires || (!seen[i].client && seen[i].expires < now)) slot = &seen[i];
	}
	if(!slot){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "tether: %d console logins live or recent; refusing %s", SEEN, user);
		return MOSQ_ERR_AUTH;
	}
	memcpy(slot->digest, digest, sizeof(digest));
	slot->expires = (time_t)ts + 2 * SKEW;
	slot->client = ed->client;
	return MOSQ_ERR_SUCCESS;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_disconnect *ed = event_data;
	(void)event;
	(void)userdata;
	for(size_t i = 0; i < SEEN; i++){
		if(seen[i].client == ed->client) seen[i].client = NULL;  /* refused until it expires */
	}
	return MOSQ_ERR_SUCCESS;
}

static int on_reload(int event, void *event_data, void *userdata)
{
	(void)event;
	(void)event_data;
	(void)userdata;
	load_keys();
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **user_data, struct mosquitto_opt *opts, int opt_count)
{
	(void)user_data;
	plugin_id = identifier;
	for(int i = 0; i < opt_count; i++){
		if(!strcmp(opts[i].key, "console_keys")) keys_path = strdup(opts[i].value);
	}
	if(!keys_path){
		mosquitto_log_printf(MOSQ_LOG_ERR, "tether: plugin_opt_console_keys is required");
		return MOSQ_ERR_INVAL;
	}
	if(sodium_init() < 0) return MOSQ_ERR_UNKNOWN;
	load_keys();
	if(mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL)
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL, NULL)
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_RELOAD, on_reload, NULL, NULL)){
		return MOSQ_ERR_UNKNOWN;
	}
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *user_data, struct mosquitto_opt *opts, int opt_count)
{
	(void)user_data;
	(void)opts;
	(void)opt_count;
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_RELOAD, on_reload, NULL);
	free(keys);
	keys = NULL;
	key_count = 0;
	free(keys_path);
	keys_path = NULL;
	return MOSQ_ERR_SUCCESS;
}
