/*
 * noop_grpc_server: a gRPC server in C that answers every unary call at once with one fixed
 * message, so that a load generator can be driven to its own limit without the server being
 * the bottleneck (issue 16: "a noop server on another machine's worth of cores"; a Python
 * grpc.aio server on one core tops out near 3,500 calls/s).
 *
 * HTTP/2 with prior knowledge, no TLS, any number of connections on one epoll loop. Requests'
 * header blocks are not decoded (the answer does not depend on them), which is exact for
 * clients that send literal header fields without indexing, as Etude's own h2 client and
 * openloop_grpc do, and for any client as long as nothing but the stream id is needed. The
 * answer: HEADERS (:status 200, content-type application/grpc), one DATA frame with the
 * message, trailers (grpc-status 0), all as literal fields, written in one send when the
 * request's END_STREAM arrives. The connection's receive window is refilled as data arrives.
 *
 *   cc -O2 -o noop_grpc_server noop_grpc_server.c
 *   noop_grpc_server PORT_FILE RESPONSE_FILE     (binds 127.0.0.1:0, writes the port)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUFFER_BYTES (1 << 20)
#define MAX_CONNECTIONS 64

struct connection {
    int fd;
    uint8_t *in;
    size_t filled;
    int preface_seen;
    uint32_t unacknowledged;
};

static uint8_t answer_template[70000];
static size_t answer_size;
static size_t stream_id_offsets[3];

static void put_frame_header(uint8_t *out, uint32_t length, uint8_t type, uint8_t flags, uint32_t stream) {
    out[0] = length >> 16; out[1] = length >> 8; out[2] = length;
    out[3] = type; out[4] = flags;
    out[5] = (stream >> 24) & 0x7f; out[6] = stream >> 16; out[7] = stream >> 8; out[8] = stream;
}

static size_t literal(uint8_t *out, const char *name, const char *value) {
    /* Literal header field without indexing, new name (RFC 7541 6.2.2); short strings only. */
    size_t n = 0, name_size = strlen(name), value_size = strlen(value);
    out[n++] = 0;
    out[n++] = name_size; memcpy(out + n, name, name_size); n += name_size;
    out[n++] = value_size; memcpy(out + n, value, value_size); n += value_size;
    return n;
}

static void build_answer(const uint8_t *message, size_t message_size) {
    uint8_t block[128];
    size_t at = 0, size = 0;
    size = 0;
    block[size++] = 0x88; /* :status 200, static index 8 */
    size += literal(block + size, "content-type", "application/grpc");
    stream_id_offsets[0] = at;
    put_frame_header(answer_template + at, size, 0x1, 0x4, 0);
    memcpy(answer_template + at + 9, block, size);
    at += 9 + size;
    stream_id_offsets[1] = at;
    put_frame_header(answer_template + at, 5 + message_size, 0x0, 0, 0);
    answer_template[at + 9] = 0;
    answer_template[at + 10] = message_size >> 24; answer_template[at + 11] = message_size >> 16;
    answer_template[at + 12] = message_size >> 8; answer_template[at + 13] = message_size;
    memcpy(answer_template + at + 14, message, message_size);
    at += 14 + message_size;
    size = literal(block, "grpc-status", "0");
    stream_id_offsets[2] = at;
    put_frame_header(answer_template + at, size, 0x1, 0x5, 0);
    memcpy(answer_template + at + 9, block, size);
    at += 9 + size;
    answer_size = at;
}

static int write_all(int fd, const uint8_t *data, size_t size) {
    while (size) {
        ssize_t written = send(fd, data, size, MSG_NOSIGNAL);
        if (written < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) { usleep(50); continue; }
            return -1;
        }
        data += written; size -= written;
    }
    return 0;
}

/* Handles every complete frame in the buffer; returns -1 when the connection must close. */
static int serve(struct connection *c, uint8_t *out, size_t *out_size) {
    size_t at = 0;
    if (!c->preface_seen) {
        if (c->filled < 24) return 0;
        if (memcmp(c->in, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24) != 0) return -1;
        c->preface_seen = 1;
        at = 24;
        put_frame_header(out + *out_size, 0, 0x4, 0, 0); /* our SETTINGS: the defaults */
        *out_size += 9;
    }
    while (c->filled - at >= 9) {
        uint32_t length = (c->in[at] << 16) | (c->in[at + 1] << 8) | c->in[at + 2];
        if (c->filled - at < 9 + length) break;
        uint8_t type = c->in[at + 3], flags = c->in[at + 4];
        uint32_t stream = ((c->in[at + 5] & 0x7f) << 24) | (c->in[at + 6] << 16) | (c->in[at + 7] << 8) | c->in[at + 8];
        uint8_t *payload = c->in + at + 9;
        if (*out_size + answer_size + 64 > BUFFER_BYTES) {
            if (write_all(c->fd, out, *out_size) != 0) return -1;
            *out_size = 0;
        }
        if (type == 0x4 && !(flags & 0x1)) {
            put_frame_header(out + *out_size, 0, 0x4, 0x1, 0); *out_size += 9;
        } else if (type == 0x6 && !(flags & 0x1)) {
            put_frame_header(out + *out_size, 8, 0x6, 0x1, 0); memcpy(out + *out_size + 9, payload, 8); *out_size += 17;
        } else if (type == 0x0) {
            c->unacknowledged += length;
        }
        if ((type == 0x0 || type == 0x1) && (flags & 0x1) && stream) {
            uint8_t *answer = out + *out_size;
            memcpy(answer, answer_template, answer_size);
            for (int i = 0; i < 3; i++) {
                uint8_t *id = answer + stream_id_offsets[i] + 5;
                id[0] = (stream >> 24) & 0x7f; id[1] = stream >> 16; id[2] = stream >> 8; id[3] = stream;
            }
            *out_size += answer_size;
        }
        at += 9 + length;
    }
    if (c->unacknowledged >= 32768) { /* refill the connection's receive window */
        uint32_t increment = c->unacknowledged;
        put_frame_header(out + *out_size, 4, 0x8, 0, 0);
        uint8_t *value = out + *out_size + 9;
        value[0] = increment >> 24; value[1] = increment >> 16; value[2] = increment >> 8; value[3] = increment;
        *out_size += 13;
        c->unacknowledged = 0;
    }
    memmove(c->in, c->in + at, c->filled - at);
    c->filled -= at;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s PORT_FILE RESPONSE_FILE\n", argv[0]); return 2; }
    uint8_t message[65536];
    FILE *message_file = fopen(argv[2], "rb");
    if (!message_file) { perror("response"); return 2; }
    size_t message_size = fread(message, 1, sizeof message, message_file);
    fclose(message_file);
    build_answer(message, message_size);

    int listener = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = 0};
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    if (bind(listener, (struct sockaddr *)&address, sizeof address) != 0 || listen(listener, 64) != 0) {
        perror("bind"); return 1;
    }
    socklen_t address_size = sizeof address;
    getsockname(listener, (struct sockaddr *)&address, &address_size);
    char temporary[4096];
    snprintf(temporary, sizeof temporary, "%s.tmp", argv[1]);
    FILE *port_file = fopen(temporary, "w");
    fprintf(port_file, "%d\n", ntohs(address.sin_port));
    fclose(port_file);
    rename(temporary, argv[1]); /* appears whole */

    int poller = epoll_create1(0);
    struct epoll_event event = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(poller, EPOLL_CTL_ADD, listener, &event);
    uint8_t *out = malloc(BUFFER_BYTES);
    struct epoll_event ready[MAX_CONNECTIONS];
    for (;;) {
        int count = epoll_wait(poller, ready, MAX_CONNECTIONS, -1);
        if (count < 0 && errno == EINTR) continue;
        for (int i = 0; i < count; i++) {
            struct connection *c = ready[i].data.ptr;
            if (c == NULL) {
                int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK);
                if (fd < 0) continue;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                c = calloc(1, sizeof *c);
                c->fd = fd;
                c->in = malloc(BUFFER_BYTES);
                struct epoll_event readable = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(poller, EPOLL_CTL_ADD, fd, &readable);
                continue;
            }
            ssize_t got = recv(c->fd, c->in + c->filled, BUFFER_BYTES - c->filled, 0);
            size_t out_size = 0;
            if (got <= 0 && !(got < 0 && (errno == EAGAIN || errno == EINTR))) goto close_it;
            if (got > 0) {
                c->filled += got;
                if (serve(c, out, &out_size) != 0) goto close_it;
                if (out_size && write_all(c->fd, out, out_size) != 0) goto close_it;
            }
            continue;
        close_it:
            epoll_ctl(poller, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
            free(c->in);
            free(c);
        }
    }
}
