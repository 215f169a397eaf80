/*
 * A small JetStream client for evproc's stream sink tests (t/045-047), built by the test
 * from Debian's libnats-dev:  cc -o nats_reader nats_reader.c -lnats
 *
 *   nats_reader URLS add-stream NAME SUBJECT REPLICAS [MAX_MSG_SIZE]
 *                                                       create a file-storage stream with
 *                                                       a 10-minute duplicate window
 *                                                       (retries while a cluster forms)
 *   nats_reader URLS leader NAME                        the stream's leader server
 *   nats_reader URLS count NAME                         messages in the stream
 *   nats_reader URLS dump NAME                          one line per message, in stream
 *                                                       order: seq, Nats-Msg-Id,
 *                                                       Evproc-Key, Evproc-Event-Id,
 *                                                       subject, payload (tab-separated)
 *
 * URLS: one server URL or several, comma-separated. Exits 0 on success.
 */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *header(natsMsg *msg, const char *name)
{
    const char *value = NULL;
    if (natsMsgHeader_Get(msg, name, &value) != NATS_OK || value == NULL)
        return "";
    return value;
}

int main(int argc, char **argv)
{
    natsConnection *nc = NULL;
    natsOptions *opts = NULL;
    jsCtx *js = NULL;
    jsOptions jsopts;
    natsStatus s;
    jsErrCode code = 0;
    int attempt;

    if (argc < 4)
    {
        fprintf(stderr, "usage: nats_reader URLS add-stream|count|dump NAME ...\n");
        return 2;
    }
    natsOptions_Create(&opts);
    {
        /* Comma-separated URLs: the client may use any of them. */
        const char *servers[16];
        int count = 0;
        char *list = strdup(argv[1]);
        char *url = strtok(list, ",");
        while (url != NULL && count < 16)
        {
            servers[count++] = url;
            url = strtok(NULL, ",");
        }
        natsOptions_SetServers(opts, servers, count);
    }
    natsOptions_SetTimeout(opts, 2000);
    for (attempt = 0; attempt < 60; attempt++)
    {
        s = natsConnection_Connect(&nc, opts);
        if (s == NATS_OK)
            break;
        usleep(250000);
    }
    if (s != NATS_OK)
    {
        fprintf(stderr, "connect: %s\n", natsStatus_GetText(s));
        return 1;
    }
    jsOptions_Init(&jsopts);
    jsopts.Wait = 5000;
    natsConnection_JetStream(&js, nc, &jsopts);

    if (strcmp(argv[2], "add-stream") == 0 && argc >= 6)
    {
        jsStreamConfig cfg;
        const char *subjects[1];
        jsStreamInfo *si = NULL;
        jsStreamConfig_Init(&cfg);
        cfg.Name = argv[3];
        subjects[0] = argv[4];
        cfg.Subjects = subjects;
        cfg.SubjectsLen = 1;
        cfg.Storage = js_FileStorage;
        cfg.Replicas = atoi(argv[5]);
        cfg.Duplicates = (int64_t) 600 * 1000 * 1000 * 1000; /* 10 minutes, in ns */
        if (argc >= 7)
            cfg.MaxMsgSize = atoi(argv[6]);
        /* A cluster forming has no JetStream leader yet: retry for up to 60 s. */
        for (attempt = 0; attempt < 120; attempt++)
        {
            s = js_AddStream(&si, js, &cfg, NULL, &code);
            if (s == NATS_OK)
                break;
            usleep(500000);
        }
        if (s != NATS_OK)
        {
            fprintf(stderr, "add-stream: %s (%d) %s\n", natsStatus_GetText(s), (int) code,
                    nats_GetLastError(NULL));
            return 1;
        }
        jsStreamInfo_Destroy(si);
        printf("ok\n");
    }
    else if (strcmp(argv[2], "leader") == 0)
    {
        jsStreamInfo *si = NULL;
        s = js_GetStreamInfo(&si, js, argv[3], NULL, &code);
        if (s != NATS_OK || si->Cluster == NULL || si->Cluster->Leader == NULL)
        {
            fprintf(stderr, "no leader: %s (%d)\n", natsStatus_GetText(s), (int) code);
            return 1;
        }
        printf("%s\n", si->Cluster->Leader);
        jsStreamInfo_Destroy(si);
    }
    else if (strcmp(argv[2], "count") == 0 || strcmp(argv[2], "dump") == 0)
    {
        jsStreamInfo *si = NULL;
        uint64_t seq, first, last;
        for (attempt = 0; attempt < 40; attempt++)
        {
            s = js_GetStreamInfo(&si, js, argv[3], NULL, &code);
            if (s == NATS_OK)
                break;
            usleep(250000);
        }
        if (s != NATS_OK)
        {
            fprintf(stderr, "stream info: %s (%d)\n", natsStatus_GetText(s), (int) code);
            return 1;
        }
        first = si->State.FirstSeq;
        last = si->State.LastSeq;
        if (strcmp(argv[2], "count") == 0)
        {
            printf("%llu\n", (unsigned long long) si->State.Msgs);
            jsStreamInfo_Destroy(si);
        }
        else
        {
            jsStreamInfo_Destroy(si);
            for (seq = first; seq <= last && last > 0; seq++)
            {
                natsMsg *msg = NULL;
                for (attempt = 0; attempt < 20; attempt++)
                {
                    s = js_GetMsg(&msg, js, argv[3], seq, NULL, &code);
                    if (s == NATS_OK || code == JSNoMessageFoundErr)
                        break;
                    usleep(250000);
                }
                if (s != NATS_OK)
                {
                    if (code == JSNoMessageFoundErr)
                        continue;
                    fprintf(stderr, "get %llu: %s (%d)\n", (unsigned long long) seq,
                            natsStatus_GetText(s), (int) code);
                    return 1;
                }
                printf("%llu\t%s\t%s\t%s\t%s\t%.*s\n", (unsigned long long) seq,
                       header(msg, "Nats-Msg-Id"), header(msg, "Evproc-Key"),
                       header(msg, "Evproc-Event-Id"), natsMsg_GetSubject(msg),
                       natsMsg_GetDataLength(msg), natsMsg_GetData(msg));
                natsMsg_Destroy(msg);
            }
        }
    }
    else
    {
        fprintf(stderr, "unknown command %s\n", argv[2]);
        return 2;
    }
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    natsOptions_Destroy(opts);
    return 0;
}
