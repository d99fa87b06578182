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
 * connection that presented it. Other usernames are left to password_file. The decision
 * itself (parsing, signature, the per-slot table of taken tokens) is console_token.c.
 *
 *   plugin /usr/local/lib/tether/tether_console_auth.so
 *   plugin_opt_console_keys /etc/tether/broker/console-keys
 *
 * Build: cc -shared -fPIC -O2 -o tether_console_auth.so tether_console_auth.c console_token.c -lsodium
 * (Debian: mosquitto-dev libsodium-dev).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <sodium.h>

#include "console_token.h"

static mosquitto_plugin_id_t *plugin_id;
static char *keys_path;
static struct tc_key *keys;
static size_t key_count;
static struct tc_table taken;

static void load_keys(void)
{
	FILE *f = fopen(keys_path, "r");
	struct tc_key *loaded = NULL;
	size_t n = 0, cap = 0;
	char line[512];

	if(!f){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "tether: cannot read %s: no console logins", keys_path);
	}else{
		while(fgets(line, sizeof(line), f)){
			struct tc_key key;
			if(tc_parse_key_line(line, &key)) continue;
			if(n == cap){
				struct tc_key *grown;
				cap = cap ? cap * 2 : 16;
				grown = realloc(loaded, cap * sizeof(*loaded));
				if(!grown) break;
				loaded = grown;
			}
			loaded[n++] = key;
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
	const char *user = ed->username;
	enum tc_verdict verdict;
	(void)event;
	(void)userdata;

	if(!user || !ends_with_slot_suffix(user)) return MOSQ_ERR_PLUGIN_DEFER;
	/* A console slot: decided here, never by a password. */
	verdict = tc_check(&taken, key_of(user), user, mosquitto_client_id(ed->client), ed->password,
	                   (int64_t)time(NULL), ed->client);
	if(verdict == TC_NOMEM) mosquitto_log_printf(MOSQ_LOG_WARNING, "tether: out of memory; refusing %s", user);
	return verdict == TC_ACCEPT || verdict == TC_RECHECK ? MOSQ_ERR_SUCCESS : MOSQ_ERR_AUTH;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_disconnect *ed = event_data;
	(void)event;
	(void)userdata;
	tc_disconnected(&taken, ed->client);  /* its token is refused from now on */
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
	tc_table_free(&taken);
	free(keys_path);
	keys_path = NULL;
	return MOSQ_ERR_SUCCESS;
}
