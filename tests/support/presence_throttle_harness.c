/*
 * Drives broker/mosquitto-plugin/presence_throttle.c from a script on stdin, for
 * tests/test_presence_throttle_plugin.py, which runs the same script through
 * tether.throttle.Throttle and requires the same answers. One command a line:
 *
 *   init RATE BURST MAX_KEYS MAX_TOPICS   -> "ok" or "invalid"
 *   offer KEY TOPIC PAYLOAD QOS RETAIN NOW -> "send" or "held" (PAYLOAD "-" is empty)
 *   release NOW                            -> "released" and each "TOPIC PAYLOAD QOS RETAIN"
 *   stats                                  -> "pending HELD_TOTAL DISCARDED DROPPED BUCKETS"
 *
 * Everything is freed at the end, so LeakSanitizer sees any leak.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "presence_throttle.h"

static void emit(void *ctx, const struct pt_update *u)
{
	(void)ctx;
	if(u->payloadlen){
		printf(" %s %.*s %u %d", u->topic, (int)u->payloadlen, (const char *)u->payload, (unsigned)u->qos, u->retain ? 1 : 0);
	}else{
		printf(" %s - %u %d", u->topic, (unsigned)u->qos, u->retain ? 1 : 0);
	}
}

int main(void)
{
	struct pt_throttle t;
	int ready = 0;
	char line[4096], key[1024], topic[1024], payload[2048];
	double now, rate;
	unsigned burst, qos;
	int retain;
	size_t max_keys, max_topics;

	while(fgets(line, sizeof(line), stdin)){
		if(sscanf(line, "init %lf %u %zu %zu", &rate, &burst, &max_keys, &max_topics) == 4){
			if(ready) pt_free(&t);
			ready = !pt_init(&t, rate, burst, max_keys, max_topics);
			puts(ready ? "ok" : "invalid");
		}else if(!ready){
			puts("not ready");
		}else if(sscanf(line, "offer %1023s %1023s %2047s %u %d %lf", key, topic, payload, &qos, &retain, &now) == 6){
			int empty = !strcmp(payload, "-");
			enum pt_verdict v = pt_offer(&t, key, topic, payload, empty ? 0 : (uint32_t)strlen(payload),
			                             (uint8_t)qos, retain != 0, now);
			puts(v == PT_SEND ? "send" : v == PT_HELD ? "held" : "nomem");
		}else if(sscanf(line, "release %lf", &now) == 1){
			printf("released");
			pt_release(&t, now, emit, NULL);
			putchar('\n');
		}else if(!strncmp(line, "stats", 5)){
			printf("%zu %llu %llu %llu %zu\n", pt_pending(&t), (unsigned long long)t.held_total,
			       (unsigned long long)t.discarded, (unsigned long long)t.limiter.dropped,
			       pt_limiter_count(&t.limiter));
		}else{
			printf("bad command: %s", line);
		}
	}
	if(ready) pt_free(&t);
	return 0;
}
