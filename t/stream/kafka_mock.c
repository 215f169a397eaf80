/*
 * librdkafka's mock Kafka cluster for evproc's Kafka sink test (t/047_kafka_mock.pl):
 * Debian packages no Kafka broker, so the test runs the mock cluster that librdkafka
 * builds in (rdkafka_mock.h). A mock cluster lives inside a client process: this one.
 * Built by the test:  cc -o kafka_mock kafka_mock.c -lrdkafka
 *
 *   kafka_mock TOPIC PARTITIONS
 * prints "bootstrap HOST:PORT,..." and then reads commands on stdin, one per line:
 *   errors CODE...   the next Produce requests fail with these error codes, in order
 *                    (rd_kafka_mock_push_request_errors)
 *   dump EXPECT      consumes TOPIC from the beginning until at least EXPECT messages were
 *                    read and every partition is at its end (copies from a new producer
 *                    session count towards EXPECT but must not stop the read before the
 *                    last message), or 10 s passed; prints "msg KEY EVENT_ID MESSAGE_ID PARTITION" per
 *                    message (tab-separated) and then "end COUNT"
 *   quit
 */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void header(rd_kafka_headers_t *headers, const char *name, char *out, size_t size)
{
    const void *value = NULL;
    size_t length = 0;
    out[0] = '\0';
    if (headers != NULL &&
        rd_kafka_header_get_last(headers, name, &value, &length) == RD_KAFKA_RESP_ERR_NO_ERROR)
        snprintf(out, size, "%.*s", (int) length, (const char *) value);
}

static int partitions;

static void dump(const char *bootstrap, const char *topic, int expect, int round)
{
    int at_end[256] = {0}, ends = 0;
    char error[512], group[64];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *consumer;
    rd_kafka_topic_partition_list_t *topics;
    int count = 0;
    time_t deadline = time(NULL) + 10;

    snprintf(group, sizeof group, "dump-%d", round);
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, error, sizeof error);
    rd_kafka_conf_set(conf, "group.id", group, error, sizeof error);
    rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", error, sizeof error);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", error, sizeof error);
    rd_kafka_conf_set(conf, "enable.partition.eof", "true", error, sizeof error);
    consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, error, sizeof error);
    rd_kafka_poll_set_consumer(consumer);
    topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    while ((count < expect || ends < partitions) && time(NULL) < deadline)
    {
        rd_kafka_message_t *message = rd_kafka_consumer_poll(consumer, 200);
        rd_kafka_headers_t *headers = NULL;
        char id[64], message_id[256];
        if (message == NULL)
            continue;
        if (message->err == RD_KAFKA_RESP_ERR__PARTITION_EOF && message->partition >= 0 &&
            message->partition < 256 && !at_end[message->partition])
        {
            at_end[message->partition] = 1;
            ends++;
        }
        if (message->err == RD_KAFKA_RESP_ERR_NO_ERROR)
        {
            if (message->partition >= 0 && message->partition < 256 && at_end[message->partition])
            {
                at_end[message->partition] = 0;
                ends--;
            }
            rd_kafka_message_headers(message, &headers);
            header(headers, "evproc-event-id", id, sizeof id);
            header(headers, "evproc-message-id", message_id, sizeof message_id);
            printf("msg\t%.*s\t%s\t%s\t%d\n", (int) message->key_len,
                   message->key ? (const char *) message->key : "", id, message_id,
                   (int) message->partition);
            count++;
        }
        rd_kafka_message_destroy(message);
    }
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);
    printf("end\t%d\n", count);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    char error[512], line[1024];
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *cluster;
    const char *bootstrap;
    int round = 0;

    if (argc < 3)
    {
        fprintf(stderr, "usage: kafka_mock TOPIC PARTITIONS\n");
        return 2;
    }
    conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", error, sizeof error);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof error);
    if (rk == NULL)
    {
        fprintf(stderr, "rd_kafka_new: %s\n", error);
        return 1;
    }
    cluster = rd_kafka_mock_cluster_new(rk, 3);
    if (cluster == NULL || rd_kafka_mock_topic_create(cluster, argv[1], atoi(argv[2]), 3) !=
                               RD_KAFKA_RESP_ERR_NO_ERROR)
    {
        fprintf(stderr, "mock cluster failed\n");
        return 1;
    }
    partitions = atoi(argv[2]);
    bootstrap = rd_kafka_mock_cluster_bootstraps(cluster);
    printf("bootstrap\t%s\n", bootstrap);
    fflush(stdout);
    while (fgets(line, sizeof line, stdin) != NULL)
    {
        if (strncmp(line, "errors", 6) == 0)
        {
            rd_kafka_resp_err_t codes[64];
            size_t count = 0;
            char *token = strtok(line + 6, " \t\n");
            while (token != NULL && count < 64)
            {
                codes[count++] = (rd_kafka_resp_err_t) atoi(token);
                token = strtok(NULL, " \t\n");
            }
            rd_kafka_mock_push_request_errors_array(cluster, 0 /* Produce */, count, codes);
            printf("ok\n");
            fflush(stdout);
        }
        else if (strncmp(line, "dump", 4) == 0)
        {
            dump(bootstrap, argv[1], atoi(line + 4), ++round);
        }
        else if (strncmp(line, "quit", 4) == 0)
        {
            break;
        }
    }
    rd_kafka_mock_cluster_destroy(cluster);
    rd_kafka_destroy(rk);
    return 0;
}
