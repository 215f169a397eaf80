/*
 * bench/nats's receiving end: a core NATS subscription on SUBJECT that prints, for every
 * message, the Evproc-Event-Id header and the wall-clock time it arrived (epoch
 * microseconds), until it got COUNT messages or was idle for IDLE seconds. The message
 * reaches a core subscriber when the server received the publish, the moment the stream
 * stores it (bench/README.md: what the latency measures).
 *   cc -O2 -o nats_subscriber nats_subscriber.c -lnats
 *   nats_subscriber URL SUBJECT COUNT IDLE_SECONDS > arrivals.csv
 */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>

int main(int argc, char **argv)
{
    natsConnection *nc = NULL;
    natsSubscription *sub = NULL;
    long count, got = 0;
    int idle;

    if (argc < 5)
    {
        fprintf(stderr, "usage: nats_subscriber URL SUBJECT COUNT IDLE_SECONDS\n");
        return 2;
    }
    count = atol(argv[3]);
    idle = atoi(argv[4]);
    if (natsConnection_ConnectTo(&nc, argv[1]) != NATS_OK ||
        natsConnection_SubscribeSync(&sub, nc, argv[2]) != NATS_OK)
    {
        fprintf(stderr, "cannot subscribe\n");
        return 1;
    }
    natsSubscription_SetPendingLimits(sub, -1, -1);
    natsConnection_Flush(nc);
    printf("ready\n");
    fflush(stdout);
    while (got < count)
    {
        natsMsg *msg = NULL;
        const char *id = "";
        struct timeval now;
        if (natsSubscription_NextMsg(&msg, sub, (int64_t) idle * 1000) != NATS_OK)
            break;
        gettimeofday(&now, NULL);
        natsMsgHeader_Get(msg, "Evproc-Event-Id", &id);
        printf("%s,%lld\n", id, (long long) now.tv_sec * 1000000 + now.tv_usec);
        natsMsg_Destroy(msg);
        got++;
    }
    fflush(stdout);
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(nc);
    return 0;
}
