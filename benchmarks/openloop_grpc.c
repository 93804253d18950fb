/*
 * openloop_grpc: a smooth open-loop gRPC load tool in C, the independent reference that
 * benchmarks/bench_loadgen.py compares Etude's load generator with (issue 16).
 *
 * It sends one pre-encoded unary gRPC request (a file holding the 5-byte gRPC prefix and the
 * message) at evenly spaced intended times, rate per second for duration seconds, over one
 * HTTP/2 connection (prior knowledge, no TLS), and records each answer's latency from its actual
 * send. Unlike h2load's --rps (a 10 ms timer per connection, so sends come in bursts), every
 * request is due at start + i / rate and is sent as soon as that time comes (ppoll with a
 * nanosecond timeout), the way wrk2 and Etude's load generator schedule.
 *
 * A request counts as OK when its stream carried a DATA frame before its trailers (the server
 * used here answers every request; a gRPC error is a trailers-only response or RST_STREAM).
 * Headers are written without HPACK indexing and answers' headers are not decoded, so no
 * HPACK state is needed.
 *
 * An answer's time is when the kernel received the read holding it (SO_TIMESTAMPING, software
 * receive stamps; CLOCK_REALTIME moved onto CLOCK_MONOTONIC), as Etude's timed transport stamps
 * it, so that neither client's wake-up delay is in its latency; with the optional last argument
 * `wake` it is when this process woke up and read it instead.
 *
 *   cc -O2 -o openloop_grpc openloop_grpc.c
 *   openloop_grpc HOST PORT PATH RATE DURATION_S BODY_FILE LATENCIES_OUT [wake]
 *
 * Prints "sent ok failed lateness_p99_us" and writes one latency (us) per OK answer.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/net_tstamp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void put_frame_header(uint8_t *out, uint32_t length, uint8_t type, uint8_t flags, uint32_t stream) {
    out[0] = length >> 16; out[1] = length >> 8; out[2] = length;
    out[3] = type; out[4] = flags;
    out[5] = stream >> 24; out[6] = stream >> 16; out[7] = stream >> 8; out[8] = stream;
}

static size_t hpack_int(uint8_t *out, uint32_t value, int prefix_bits, uint8_t flags) {
    uint32_t limit = (1u << prefix_bits) - 1;
    size_t n = 0;
    if (value < limit) { out[n++] = flags | value; return n; }
    out[n++] = flags | limit;
    value -= limit;
    while (value >= 128) { out[n++] = (value & 0x7f) | 0x80; value >>= 7; }
    out[n++] = value;
    return n;
}

/* A header field without indexing: by static-table name index, or (index 0) a literal name. */
static size_t literal(uint8_t *out, uint32_t index, const char *name, const char *value) {
    size_t n = 0;
    if (index) {
        n += hpack_int(out + n, index, 4, 0);
    } else {
        out[n++] = 0;
        n += hpack_int(out + n, strlen(name), 7, 0);
        memcpy(out + n, name, strlen(name)); n += strlen(name);
    }
    n += hpack_int(out + n, strlen(value), 7, 0);
    memcpy(out + n, value, strlen(value)); n += strlen(value);
    return n;
}

static int write_all(int fd, const uint8_t *data, size_t size) {
    while (size) {
        ssize_t written = write(fd, data, size);
        if (written < 0) {
            if (errno == EAGAIN || errno == EINTR) { struct pollfd p = {fd, POLLOUT, 0}; poll(&p, 1, 100); continue; }
            return -1;
        }
        data += written; size -= written;
    }
    return 0;
}

static int compare_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 8 && !(argc == 9 && strcmp(argv[8], "wake") == 0)) {
        fprintf(stderr, "usage: %s HOST PORT PATH RATE DURATION_S BODY_FILE LATENCIES_OUT [wake]\n", argv[0]);
        return 2;
    }
    int kernel_stamps = argc == 8;
    const char *host = argv[1], *path = argv[3];
    int port = atoi(argv[2]);
    double rate = atof(argv[4]);
    int duration_s = atoi(argv[5]);
    long total = (long)(rate * duration_s);

    uint8_t body[65536];
    FILE *body_file = fopen(argv[6], "rb");
    if (!body_file) { perror("body"); return 2; }
    size_t body_size = fread(body, 1, sizeof body, body_file);
    fclose(body_file);

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &address.sin_addr);
    if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) { perror("connect"); return 1; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int stamping = SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE;
    if (kernel_stamps && setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPING, &stamping, sizeof stamping) != 0) {
        perror("SO_TIMESTAMPING");
        return 1;
    }

    /* Preface, SETTINGS (no push, largest stream window), a 1 GiB connection window. */
    uint8_t start[128];
    size_t n = 0;
    memcpy(start, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24); n = 24;
    put_frame_header(start + n, 12, 0x4, 0, 0); n += 9;
    uint8_t settings[12] = {0, 2, 0, 0, 0, 0, 0, 4, 0x7f, 0xff, 0xff, 0xff};
    memcpy(start + n, settings, 12); n += 12;
    put_frame_header(start + n, 4, 0x8, 0, 0); n += 9;
    uint32_t increment = (1u << 30) - 65535;
    start[n++] = increment >> 24; start[n++] = increment >> 16; start[n++] = increment >> 8; start[n++] = increment;
    if (write_all(fd, start, n) != 0) { perror("write"); return 1; }

    /* One request: HEADERS then DATA with END_STREAM; only the stream id changes. */
    uint8_t request[65536 + 1024];
    size_t block = 0;
    uint8_t *headers = request + 9;
    headers[block++] = 0x83; /* :method POST */
    headers[block++] = 0x86; /* :scheme http */
    block += literal(headers + block, 4, NULL, path);
    char authority[300];
    snprintf(authority, sizeof authority, "%s:%d", host, port);
    block += literal(headers + block, 1, NULL, authority);
    block += literal(headers + block, 31, NULL, "application/grpc");
    block += literal(headers + block, 0, "te", "trailers");
    block += literal(headers + block, 0, "grpc-timeout", "1000000u");
    put_frame_header(request, block, 0x1, 0x4, 0);
    size_t data_at = 9 + block;
    put_frame_header(request + data_at, body_size, 0x0, 0x1, 0);
    memcpy(request + data_at + 9, body, body_size);
    size_t request_size = data_at + 9 + body_size;

    int64_t *sent_ns = calloc(total + 1, sizeof *sent_ns);
    int64_t *latency_ns = calloc(total + 1, sizeof *latency_ns);
    int64_t *lateness_ns = calloc(total + 1, sizeof *lateness_ns);
    uint8_t *had_data = calloc(total + 1, 1);
    uint8_t *ended = calloc(total + 1, 1);
    long sent = 0, ok = 0, failed = 0;
    int64_t send_window = 65535;

    static uint8_t buffer[1 << 20];
    size_t filled = 0;
    int64_t t0 = now_ns() + 100000000LL; /* 100 ms to settle */
    int64_t end_ns = t0 + (int64_t)duration_s * 1000000000LL + 2000000000LL;
    int64_t spacing_ns = (int64_t)(1e9 / rate);

    while (now_ns() < end_ns && ok + failed < total) {
        int64_t now = now_ns();
        while (sent < total && t0 + sent * spacing_ns <= now && send_window >= (int64_t)body_size) {
            uint32_t stream = 2 * sent + 1;
            for (int shift = 0; shift < 2; shift++) {
                uint8_t *frame = request + (shift ? data_at : 0);
                frame[5] = (stream >> 24) & 0x7f; frame[6] = stream >> 16; frame[7] = stream >> 8; frame[8] = stream;
            }
            int64_t actual = now_ns();
            if (write_all(fd, request, request_size) != 0) { perror("write"); goto done; }
            sent_ns[sent] = actual;
            lateness_ns[sent] = actual - (t0 + sent * spacing_ns);
            send_window -= body_size;
            sent++;
            now = now_ns();
        }
        int64_t wait_ns = sent < total ? t0 + sent * spacing_ns - now_ns() : 10000000LL;
        if (wait_ns < 0) wait_ns = 0;
        struct timespec timeout = {wait_ns / 1000000000LL, wait_ns % 1000000000LL};
        struct pollfd readable = {fd, POLLIN, 0};
        if (ppoll(&readable, 1, &timeout, NULL) <= 0) continue;
        char control[CMSG_SPACE(3 * sizeof(struct timespec))];
        struct iovec vector = {buffer + filled, sizeof buffer - filled};
        struct msghdr message = {.msg_iov = &vector, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
        ssize_t got = recvmsg(fd, &message, 0);
        if (got <= 0) break;
        int64_t received = now_ns();
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&message); kernel_stamps && c; c = CMSG_NXTHDR(&message, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPING) {
                struct timespec *stamp = (struct timespec *)CMSG_DATA(c), realtime;
                clock_gettime(CLOCK_REALTIME, &realtime);
                int64_t realtime_ns = (int64_t)realtime.tv_sec * 1000000000LL + realtime.tv_nsec;
                received += (int64_t)stamp->tv_sec * 1000000000LL + stamp->tv_nsec - realtime_ns;
            }
        }
        filled += got;
        size_t at = 0;
        while (filled - at >= 9) {
            uint32_t length = (buffer[at] << 16) | (buffer[at + 1] << 8) | buffer[at + 2];
            if (filled - at < 9 + length) break;
            uint8_t type = buffer[at + 3], flags = buffer[at + 4];
            uint32_t stream = ((buffer[at + 5] & 0x7f) << 24) | (buffer[at + 6] << 16) | (buffer[at + 7] << 8) | buffer[at + 8];
            uint8_t *payload = buffer + at + 9;
            long index = stream ? (long)(stream - 1) / 2 : -1;
            if (type == 0x4 && !(flags & 0x1)) { /* SETTINGS: acknowledge */
                uint8_t ack[9]; put_frame_header(ack, 0, 0x4, 0x1, 0); write_all(fd, ack, 9);
            } else if (type == 0x6 && !(flags & 0x1)) { /* PING: answer */
                uint8_t pong[17]; put_frame_header(pong, 8, 0x6, 0x1, 0); memcpy(pong + 9, payload, 8); write_all(fd, pong, 17);
            } else if (type == 0x8 && stream == 0) { /* WINDOW_UPDATE on the connection */
                send_window += ((payload[0] & 0x7f) << 24) | (payload[1] << 16) | (payload[2] << 8) | payload[3];
            } else if (type == 0x0 && index >= 0 && index < sent) {
                had_data[index] = 1;
            } else if ((type == 0x1 && (flags & 0x1)) || type == 0x3) { /* trailers or RST_STREAM */
                if (index >= 0 && index < sent && !ended[index]) {
                    ended[index] = 1;
                    if (type == 0x1 && had_data[index]) { latency_ns[ok++] = received - sent_ns[index]; }
                    else failed++;
                }
            } else if (type == 0x7) {
                fprintf(stderr, "GOAWAY\n");
                goto done;
            }
            at += 9 + length;
        }
        memmove(buffer, buffer + at, filled - at);
        filled -= at;
    }
done:
    close(fd);
    FILE *out = fopen(argv[7], "w");
    if (!out) { perror("out"); return 1; }
    for (long i = 0; i < ok; i++) fprintf(out, "%lld\n", (long long)(latency_ns[i] / 1000));
    fclose(out);
    qsort(lateness_ns, sent, sizeof *lateness_ns, compare_i64);
    long rank = sent ? (long)(0.99 * sent + 0.5) - 1 : 0;
    if (rank < 0) rank = 0;
    printf("%ld %ld %ld %lld\n", sent, ok, failed, sent ? (long long)(lateness_ns[rank] / 1000) : 0LL);
    return 0;
}
