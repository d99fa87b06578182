/*
 * tether's Mosquitto 2.0 plugin: web console logins with one-time signed tokens, and
 * presence fanned out at a bounded rate per publisher.
 *
 * The browser console logs in to its slot NAME.c with a fresh token each time
 * (docs/protocol.md section 13.1; tether/console_login.py is the reference):
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
 * Presence (the embedded broker's rule, broker/embedded.py; presence_throttle.c is the
 * decision): a PUBLISH by an agent to its own presence topics, PREFIX/a/USERNAME/presence
 * and anything under it (its status), passes at PT_RATE per second per publisher after a
 * burst of PT_BURST. One over the rate is held (a copy, only the newest per topic) and
 * dropped from Mosquitto's flow (MOSQ_EVT_MESSAGE returns MOSQ_ERR_ACL_DENIED, which
 * Mosquitto 2.0.11 answers with a normal PUBACK to a 3.1.1 client); the main loop's tick
 * (at least every 100 ms) publishes held updates again, with their QoS and retain flag,
 * once their publisher has a token: as broker messages, so they do not come back through
 * MOSQ_EVT_MESSAGE, and each subscriber still gets them only through its read ACL. The
 * topic is matched by suffix, so the plugin needs no prefix: the acl lets an agent write
 * only under its own PREFIX/a/USERNAME/, and elsewhere the suffix is nobody's presence.
 * (So an admin, whose acl lets it write any agent's presence, is not limited here; the
 * embedded broker limits every publisher on every agent's presence.)
 * Unlike the embedded broker, a held update becomes the retained copy only when it is
 * released (Mosquitto retains a message as it fans it out). Mosquitto 2.0.11 runs the
 * tick only with per_listener_settings false (as mosquitto.conf has it).
 *
 * Build: cc -shared -fPIC -O2 -o tether_console_auth.so tether_console_auth.c console_token.c \
 *          presence_throttle.c -lsodium
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
#include "presence_throttle.h"

static mosquitto_plugin_id_t *plugin_id;
static char *keys_path;
static struct tc_key *keys;
static size_t key_count;
static struct tc_table taken;
static struct pt_throttle presence;
static struct pt_limiter hold_log;  /* a log line per held publisher per minute */
static bool presence_ready;

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

static double monotonic_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Whether topic is PREFIX/a/USER/presence or under it, for some non-empty PREFIX. */
static int is_own_presence(const char *topic, const char *user)
{
	size_t user_len = strlen(user);
	for(const char *p = strstr(topic, "/a/"); p; p = strstr(p + 1, "/a/")){
		const char *rest = p + 3;
		if(p == topic) continue;
		if(strncmp(rest, user, user_len) || strncmp(rest + user_len, "/presence", 9)) continue;
		rest += user_len + 9;
		if(*rest == '\0' || *rest == '/') return 1;
	}
	return 0;
}

static int on_message(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *ed = event_data;
	const char *user;
	double now;
	(void)event;
	(void)userdata;

	if(!ed->client || !ed->topic) return MOSQ_ERR_SUCCESS;
	user = mosquitto_client_username(ed->client);
	if(!user || !*user || !is_own_presence(ed->topic, user)) return MOSQ_ERR_SUCCESS;
	now = monotonic_now();
	switch(pt_offer(&presence, user, ed->topic, ed->payload, ed->payloadlen, ed->qos, ed->retain, now)){
		case PT_SEND:
			return MOSQ_ERR_SUCCESS;
		case PT_HELD:
			if(pt_limiter_allow(&hold_log, user, now) == 1){
				mosquitto_log_printf(MOSQ_LOG_NOTICE, "tether: holding presence updates from %s: "
				                     "over %g per second after a burst of %d", user, PT_RATE, PT_BURST);
			}
			return MOSQ_ERR_ACL_DENIED;  /* dropped here; the held copy goes out on a tick */
		case PT_NOMEM:
		default:
			/* Passed on rather than lost: the newest state matters more than the rate. */
			mosquitto_log_printf(MOSQ_LOG_WARNING, "tether: out of memory; presence from %s not rate-limited", user);
			return MOSQ_ERR_SUCCESS;
	}
}

static void publish_held(void *ctx, const struct pt_update *update)
{
	int rc;
	(void)ctx;
	rc = mosquitto_broker_publish_copy(NULL, update->topic, (int)update->payloadlen, update->payload,
	                                   update->qos, update->retain, NULL);
	if(rc != MOSQ_ERR_SUCCESS){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "tether: could not release held presence on %s (%d)",
		                     update->topic, rc);
	}
}

static int on_tick(int event, void *event_data, void *userdata)
{
	(void)event;
	(void)event_data;  /* Mosquitto 2.0.11 leaves its times zero */
	(void)userdata;
	if(pt_pending(&presence)) pt_release(&presence, monotonic_now(), publish_held, NULL);
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
	if(pt_init(&presence, PT_RATE, PT_BURST, PT_PUBLISHERS, PT_HELD_TOPICS)) return MOSQ_ERR_NOMEM;
	if(pt_limiter_init(&hold_log, 1.0 / 60, 1, PT_PUBLISHERS)){
		pt_free(&presence);
		return MOSQ_ERR_NOMEM;
	}
	presence_ready = true;
	load_keys();
	if(mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL)
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL, NULL)
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_RELOAD, on_reload, NULL, NULL)
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL, NULL)
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_TICK, on_tick, NULL, NULL)){
		return MOSQ_ERR_UNKNOWN;
	}
	mosquitto_log_printf(MOSQ_LOG_INFO, "tether: presence at %g per second per publisher after a burst of %d",
	                     PT_RATE, PT_BURST);
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
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_TICK, on_tick, NULL);
	if(presence_ready){
		/* Held updates that were never released are lost with the broker, as the
		 * embedded broker loses them; every agent publishes presence again on reconnect. */
		pt_free(&presence);
		pt_limiter_free(&hold_log);
		presence_ready = false;
	}
	free(keys);
	keys = NULL;
	key_count = 0;
	tc_table_free(&taken);
	free(keys_path);
	keys_path = NULL;
	return MOSQ_ERR_SUCCESS;
}
