/*
 * _timed_socket: a connected TCP socket driven by a thread of its own, so that the load
 * generator's Python runs in batches instead of once per request (issue 16).
 *
 * Python hands over bytes to write at an exact time (a request, a few milliseconds before it is
 * due) or at once (HTTP/2 control frames). The thread sleeps until the next write is due (ppoll
 * with a nanosecond timeout on CLOCK_MONOTONIC, the clock of time.perf_counter_ns()), writes it,
 * and notes when. It reads what the peer sent at its next wake-up, answer by answer, each read
 * carrying the kernel's arrival time (SO_TIMESTAMPING; without it, it reads each arrival at once
 * and stamps it then). Python takes both in one call (`take`): the times its timed writes went
 * out, and the bytes read with their arrival times. It learns there is something to take from its own timer, or from `ring_fd`
 * (an eventfd for its event loop), which the thread signals once bytes have waited `ring_delay_ns`
 * or the connection has ended.
 *
 * Of HTTP/2 it knows only the 9-byte frame header: to end a read where an answer ends, and
 * (split_answers) to hand over an answer of the common shape as its three payloads, which spares
 * Python a frame-by-frame parse. Flow control, HPACK and every protocol decision stay in Python
 * (services/loadgen/h2_client.py); this is the part that must happen at the right microsecond,
 * and the part that costs most per request.
 *
 * The thread never touches a Python object; Python and the thread share the state below under one
 * mutex, which neither holds across a blocking call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <linux/net_tstamp.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define READ_CHUNK_BYTES 65536
/* With the kernel's receive timestamps, answers need not be read the moment they arrive: the
 * thread reads them when it wakes to write, unless no write is due within this long. */
#define LAZY_READ_NS 1000000LL

static int64_t monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* A growable byte buffer. */
typedef struct {
    char *data;
    size_t size, capacity;
} Bytes;

static int bytes_reserve(Bytes *b, size_t extra) {
    if (b->size + extra <= b->capacity) return 0;
    size_t capacity = b->capacity ? b->capacity : 4096;
    while (capacity < b->size + extra) capacity *= 2;
    char *data = realloc(b->data, capacity);
    if (!data) return -1;
    b->data = data;
    b->capacity = capacity;
    return 0;
}

static int bytes_append(Bytes *b, const void *data, size_t size) {
    if (bytes_reserve(b, size) != 0) return -1;
    memcpy(b->data + b->size, data, size);
    b->size += size;
    return 0;
}

/* A write waiting for its time: its bytes sit in `queued` from `start` to `end`. */
typedef struct {
    int64_t at_ns;
    size_t start, end;
} Due;

/* Where the byte stream stands in HTTP/2 framing (RFC 9113 4.1): inside a frame (`need` bytes of
 * its payload to come, `ends`: it ends a stream) or between frames (`header_have` bytes of the
 * next header seen). Only frame boundaries are tracked, so that a read can stop right after a
 * frame that ends an answer and carry that answer's own arrival time. */
typedef struct {
    uint32_t need;
    int ends;
    uint8_t header[9];
    int header_have;
} Framing;

/* How many of `p`'s `n` bytes to read so that the read ends with the first frame that ends a
 * stream (END_STREAM on DATA or HEADERS, or RST_STREAM), or all `n`; `f` is moved to there. */
static size_t through_first_stream_end(Framing *f, const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (f->need) {
            size_t take = f->need < n - i ? f->need : n - i;
            i += take;
            f->need -= (uint32_t)take;
            if (!f->need && f->ends) { f->ends = 0; return i; }
            continue;
        }
        while (f->header_have < 9 && i < n) f->header[f->header_have++] = p[i++];
        if (f->header_have < 9) break;
        f->header_have = 0;
        uint32_t length = (uint32_t)f->header[0] << 16 | (uint32_t)f->header[1] << 8 | f->header[2];
        uint8_t type = f->header[3], flags = f->header[4];
        int ends = ((type == 0x0 || type == 0x1) && (flags & 0x1)) || type == 0x3;
        if (!length) {
            if (ends) return i;
            continue;
        }
        f->need = length;
        f->ends = ends;
    }
    return i;
}

/* A whole gRPC answer in the shape nearly every one has: HEADERS (END_HEADERS only), one DATA
 * (no flags), trailers (END_HEADERS | END_STREAM), all of one stream, nothing else; where its
 * pieces lie. Split here so that the h2 client skips its frame-by-frame parse (take(), with
 * split_answers): what each piece means (HPACK, gRPC) is still decided in Python. */
typedef struct {
    uint32_t stream_id;
    size_t headers_at, headers_size, message_at, message_size, trailers_at, trailers_size;
} Answer;

static int frame_at(const uint8_t *p, size_t n, size_t *at, uint8_t type, uint8_t flags,
                    uint32_t stream_id, size_t *payload_at, size_t *payload_size) {
    if (n - *at < 9) return 0;
    const uint8_t *h = p + *at;
    size_t length = (size_t)h[0] << 16 | (size_t)h[1] << 8 | h[2];
    /* The reserved bit clear too: the pieces then give back exactly these bytes (h2_frames). */
    uint32_t id = (uint32_t)h[5] << 24 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 8 | h[8];
    if (h[3] != type || h[4] != flags || id != stream_id || length > n - *at - 9) return 0;
    *payload_at = *at + 9;
    *payload_size = length;
    *at += 9 + length;
    return 1;
}

static int split_answer(const uint8_t *p, size_t n, Answer *a) {
    if (n < 9) return 0;
    a->stream_id = (uint32_t)p[5] << 24 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 8 | p[8];
    if (!a->stream_id || a->stream_id & 0x80000000u) return 0;
    size_t at = 0;
    return frame_at(p, n, &at, 0x1, 0x4, a->stream_id, &a->headers_at, &a->headers_size)
        && frame_at(p, n, &at, 0x0, 0x0, a->stream_id, &a->message_at, &a->message_size)
        && frame_at(p, n, &at, 0x1, 0x5, a->stream_id, &a->trailers_at, &a->trailers_size)
        && at == n;
}

/* A read: the bytes in `received` up to `end` arrived at `at_ns`. */
typedef struct {
    int64_t at_ns;
    size_t end;
} Arrival;

typedef struct {
    PyObject_HEAD
    int fd, ring_fd, wake_fd;
    int64_t ring_delay_ns;
    pthread_t thread;
    int thread_started;
    pthread_mutex_t lock;
    /* Timed writes, in the order handed over (FIFO: none leaves before the one before it). */
    Bytes queued;
    Due *due;
    size_t due_head, due_count, due_capacity;
    /* Bytes being written (a write the socket took in part stays here). */
    Bytes out;
    /* When each timed write went out, in order, since the last take(). */
    int64_t *sent_ns;
    size_t sent_count, sent_capacity;
    /* Bytes read since the last take(), and when. */
    Bytes received;
    Arrival *arrivals;
    size_t arrival_count, arrival_capacity;
    int rung;
    int stopping;
    /* The kernel stamps each read with its arrival time (SO_TIMESTAMPING): reads may wait. */
    int kernel_stamps;
    /* take() hands over whole answers in pieces (see Answer). */
    int split_answers;
    Framing framing;
    /* The connection's end: 0 while open, else an errno (or -1: the peer closed it). */
    int ended;
} TimedSocket;

static void ring(TimedSocket *self) {
    if (!self->rung) {
        uint64_t one = 1;
        self->rung = 1;
        (void)!write(self->ring_fd, &one, sizeof one);
    }
}

static void wake(TimedSocket *self) {
    uint64_t one = 1;
    (void)!write(self->wake_fd, &one, sizeof one);
}

/* Writes what `out` holds until the socket would block; sets `ended` on an error. */
static void flush_out(TimedSocket *self) {
    size_t at = 0;
    while (at < self->out.size) {
        ssize_t n = send(self->fd, self->out.data + at, self->out.size - at, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) self->ended = errno;
            break;
        }
        at += (size_t)n;
    }
    memmove(self->out.data, self->out.data + at, self->out.size - at);
    self->out.size -= at;
}

/* Moves the writes due by `now` to `out`, noting their time. */
static void send_due(TimedSocket *self, int64_t now) {
    int moved = 0;
    while (self->due_count && self->due[self->due_head].at_ns <= now) {
        Due *d = &self->due[self->due_head];
        if (self->sent_count == self->sent_capacity) {
            size_t capacity = self->sent_capacity ? 2 * self->sent_capacity : 1024;
            int64_t *grown = realloc(self->sent_ns, capacity * sizeof *grown);
            if (!grown) { self->ended = ENOMEM; return; }
            self->sent_ns = grown;
            self->sent_capacity = capacity;
        }
        if (bytes_append(&self->out, self->queued.data + d->start, d->end - d->start) != 0) {
            self->ended = ENOMEM;
            return;
        }
        self->sent_ns[self->sent_count++] = now;
        self->due_head = (self->due_head + 1) % self->due_capacity;
        self->due_count--;
        moved = 1;
    }
    if (!self->due_count) {
        self->queued.size = 0;
    } else if (moved && self->due[self->due_head].start > self->queued.size / 2) {
        /* Under steady load the queue never empties: what was written leaves the buffer. */
        size_t gone = self->due[self->due_head].start;
        memmove(self->queued.data, self->queued.data + gone, self->queued.size - gone);
        self->queued.size -= gone;
        for (size_t i = 0; i < self->due_count; i++) {
            Due *d = &self->due[(self->due_head + i) % self->due_capacity];
            d->start -= gone;
            d->end -= gone;
        }
    }
    if (moved) flush_out(self);
}

static int note_arrival(TimedSocket *self, int64_t at_ns) {
    if (self->arrival_count == self->arrival_capacity) {
        size_t capacity = self->arrival_capacity ? 2 * self->arrival_capacity : 256;
        Arrival *grown = realloc(self->arrivals, capacity * sizeof *grown);
        if (!grown) { self->ended = ENOMEM; return -1; }
        self->arrivals = grown;
        self->arrival_capacity = capacity;
    }
    self->arrivals[self->arrival_count++] = (Arrival){at_ns, self->received.size};
    return 0;
}

/* The kernel's receive time of the last bytes a recvmsg read (CLOCK_REALTIME), on the monotonic
 * clock; `fallback` when the message carries none. */
static int64_t arrival_ns(struct msghdr *message, int64_t realtime_minus_monotonic, int64_t fallback) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR(message); c; c = CMSG_NXTHDR(message, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPING) {
            struct timespec *stamps = (struct timespec *)CMSG_DATA(c);
            if (stamps[0].tv_sec || stamps[0].tv_nsec)
                return (int64_t)stamps[0].tv_sec * 1000000000LL + stamps[0].tv_nsec - realtime_minus_monotonic;
        }
    }
    return fallback;
}

/* Reads what has arrived. With kernel stamps: answer by answer, each read ending with a frame
 * that ends a stream (a peek finds where), so that each answer carries its own arrival time. */
static void receive(TimedSocket *self, int64_t now) {
    struct timespec realtime;
    clock_gettime(CLOCK_REALTIME, &realtime);
    int64_t offset = (int64_t)realtime.tv_sec * 1000000000LL + realtime.tv_nsec - monotonic_ns();
    for (;;) {
        if (bytes_reserve(&self->received, READ_CHUNK_BYTES) != 0) { self->ended = ENOMEM; return; }
        uint8_t *into = (uint8_t *)self->received.data + self->received.size;
        size_t size = READ_CHUNK_BYTES, peeked = 0;
        if (self->kernel_stamps) {
            ssize_t n = recv(self->fd, into, READ_CHUNK_BYTES, MSG_PEEK | MSG_DONTWAIT);
            if (n == 0) { self->ended = -1; return; }
            if (n < 0) {
                if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) self->ended = errno;
                return;
            }
            peeked = (size_t)n;
            Framing scan = self->framing;
            size = through_first_stream_end(&scan, into, peeked);
        }
        char control[CMSG_SPACE(sizeof(struct timespec) * 3)];
        struct iovec vector = {into, size};
        struct msghdr message = {.msg_iov = &vector, .msg_iovlen = 1,
                                 .msg_control = control, .msg_controllen = sizeof control};
        ssize_t n = recvmsg(self->fd, &message, MSG_DONTWAIT);
        if (n == 0) { self->ended = -1; return; }
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) self->ended = errno;
            return;
        }
        /* The framing moves over exactly what was read (the peeked bytes, or fewer). */
        if (self->kernel_stamps) through_first_stream_end(&self->framing, into, (size_t)n);
        self->received.size += (size_t)n;
        if (note_arrival(self, arrival_ns(&message, offset, now)) != 0) return;
        /* Everything peeked is read: what arrives later is read at the next wake-up. */
        if (!self->kernel_stamps || (size_t)n >= peeked) return;
    }
}

/* sched_setattr(2)'s argument (glibc has no wrapper). */
struct sched_attr_v1 {
    uint32_t size, sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime, sched_deadline, sched_period;
};

/* Asks the scheduler for short slices for this thread (Linux 6.12+: a fair task's sched_runtime
 * is its slice; unprivileged; older kernels ignore or refuse it, and nothing changes). Sharing a
 * core with the interpreter, a thread waking to write would otherwise wait for the interpreter's
 * slice to end: send lateness p99 0.4-1.1 ms at 2,000-8,000 req/s on one core, 0.1-0.65 ms
 * with this, in alternating runs (benchmarks/bench_loadgen.py --drive ... --cpu 0). */
static void prefer_short_slices(void) {
    struct sched_attr_v1 attr = {.size = sizeof attr, .sched_policy = SCHED_OTHER, .sched_runtime = 100000};
    attr.sched_nice = getpriority(PRIO_PROCESS, 0); /* its niceness as it was (this thread's) */
    (void)syscall(SYS_sched_setattr, 0, &attr, 0);
}

static void *run(void *arg) {
    TimedSocket *self = arg;
    prefer_short_slices();
    /* Wake at the time asked for, not up to 50 us later (a thread's default timer slack): send
     * lateness p50 0.09 -> 0.045 ms at 2,000 req/s, CPU per request unchanged (drive runs). */
    (void)prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    pthread_mutex_lock(&self->lock);
    while (!self->stopping && !self->ended) {
        int64_t now = monotonic_ns();
        send_due(self, now);
        if (self->out.size) flush_out(self);
        /* Answers that arrived since the last wake-up, each with the kernel's time of arrival. */
        if (self->kernel_stamps) receive(self, now);
        if (self->ended) break;
        /* Sleep until the next write is due, or bytes read have waited long enough for Python. */
        int64_t until = INT64_MAX;
        if (self->due_count) until = self->due[self->due_head].at_ns;
        if (self->arrival_count && !self->rung) {
            int64_t ring_at = self->arrivals[0].at_ns + self->ring_delay_ns;
            if (ring_at <= now) { ring(self); } else if (ring_at < until) { until = ring_at; }
        }
        /* A wake-up per answer costs more than the answer's parse on a small virtual machine: with
         * kernel stamps answers wait for the next write's wake-up, when one is due soon. */
        int read_now = !self->kernel_stamps || !self->due_count || until - now > LAZY_READ_NS;
        struct pollfd fds[2] = {
            {self->fd, (short)((read_now ? POLLIN : 0) | (self->out.size ? POLLOUT : 0)), 0},
            {self->wake_fd, POLLIN, 0},
        };
        pthread_mutex_unlock(&self->lock);
        struct timespec timeout, *timeout_p = NULL;
        if (until != INT64_MAX) {
            int64_t wait_ns = until - monotonic_ns();
            if (wait_ns < 0) wait_ns = 0;
            timeout.tv_sec = wait_ns / 1000000000LL;
            timeout.tv_nsec = wait_ns % 1000000000LL;
            timeout_p = &timeout;
        }
        int ready = ppoll(fds, 2, timeout_p, NULL);
        int64_t woke = monotonic_ns();
        pthread_mutex_lock(&self->lock);
        if (ready < 0) continue; /* EINTR */
        if (fds[1].revents & POLLIN) {
            uint64_t count;
            (void)!read(self->wake_fd, &count, sizeof count);
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) receive(self, woke);
    }
    /* Closing: what Python wrote last (its streams' resets) goes out if the socket takes it. */
    if (self->stopping && !self->ended && self->out.size) flush_out(self);
    if (self->ended) ring(self);
    pthread_mutex_unlock(&self->lock);
    return NULL;
}

static int TimedSocket_init(TimedSocket *self, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"fd", "ring_delay_ns", "kernel_stamps", "split_answers", NULL};
    int fd, kernel_stamps = 1, split_answers = 0;
    long long ring_delay_ns;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iL|pp", keywords, &fd, &ring_delay_ns, &kernel_stamps,
                                     &split_answers))
        return -1;
    if (self->fd >= 0 || self->thread_started) {
        PyErr_SetString(PyExc_RuntimeError, "a TimedSocket is initialised once");
        return -1;
    }
    if (ring_delay_ns < 0) {
        PyErr_SetString(PyExc_ValueError, "ring_delay_ns: must be >= 0");
        return -1;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->ring_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    self->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (self->ring_fd < 0 || self->wake_fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    int stamping = SOF_TIMESTAMPING_RX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE;
    self->kernel_stamps =
        kernel_stamps && setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPING, &stamping, sizeof stamping) == 0;
    self->fd = fd;
    self->ring_delay_ns = ring_delay_ns;
    self->split_answers = split_answers;
    int error = pthread_create(&self->thread, NULL, run, self);
    if (error) {
        errno = error;
        self->fd = -1;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->thread_started = 1;
    return 0;
}

static PyObject *TimedSocket_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    TimedSocket *self = (TimedSocket *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->fd = self->ring_fd = self->wake_fd = -1;
    pthread_mutex_init(&self->lock, NULL);
    return (PyObject *)self;
}

/* Stops the thread and closes the socket (and its eventfds); safe to call twice. */
static void stop(TimedSocket *self) {
    if (self->thread_started) {
        pthread_mutex_lock(&self->lock);
        self->stopping = 1;
        pthread_mutex_unlock(&self->lock);
        wake(self);
        Py_BEGIN_ALLOW_THREADS
        pthread_join(self->thread, NULL);
        Py_END_ALLOW_THREADS
        self->thread_started = 0;
    }
    int *fds[3] = {&self->fd, &self->ring_fd, &self->wake_fd};
    for (int i = 0; i < 3; i++) {
        if (*fds[i] >= 0) close(*fds[i]);
        *fds[i] = -1;
    }
}

static void TimedSocket_dealloc(TimedSocket *self) {
    stop(self);
    free(self->queued.data);
    free(self->due);
    free(self->out.data);
    free(self->sent_ns);
    free(self->received.data);
    free(self->arrivals);
    pthread_mutex_destroy(&self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int check_open(TimedSocket *self) {
    if (self->fd < 0) {
        PyErr_SetString(PyExc_ValueError, "the TimedSocket is closed");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(write_at_doc,
    "write_at(at_ns, data): writes `data` at time.perf_counter_ns() == at_ns (at once when that\n"
    "has passed), after every timed write handed over before it; take() reports when it went out.");

static PyObject *TimedSocket_write_at(TimedSocket *self, PyObject *args) {
    long long at_ns;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "Ly*", &at_ns, &data)) return NULL;
    if (check_open(self) != 0) { PyBuffer_Release(&data); return NULL; }
    pthread_mutex_lock(&self->lock);
    int was_idle = self->due_count == 0;
    int failed = 0;
    if (self->due_count == self->due_capacity) {
        /* Grown in order: the ring's entries are laid out again from 0. */
        size_t capacity = self->due_capacity ? 2 * self->due_capacity : 256;
        Due *grown = malloc(capacity * sizeof *grown);
        if (grown) {
            for (size_t i = 0; i < self->due_count; i++) grown[i] = self->due[(self->due_head + i) % self->due_capacity];
            free(self->due);
            self->due = grown;
            self->due_head = 0;
            self->due_capacity = capacity;
        } else {
            failed = 1;
        }
    }
    size_t start = self->queued.size;
    if (!failed && bytes_append(&self->queued, data.buf, (size_t)data.len) != 0) failed = 1;
    if (!failed) {
        self->due[(self->due_head + self->due_count) % self->due_capacity] = (Due){at_ns, start, self->queued.size};
        self->due_count++;
    }
    pthread_mutex_unlock(&self->lock);
    PyBuffer_Release(&data);
    if (failed) return PyErr_NoMemory();
    if (was_idle) wake(self); /* the thread sleeps without a write due: it must learn of this one */
    Py_RETURN_NONE;
}

PyDoc_STRVAR(write_doc, "write(data): writes `data` now, ahead of the timed writes not yet due.");

static PyObject *TimedSocket_write(TimedSocket *self, PyObject *args) {
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "y*", &data)) return NULL;
    if (check_open(self) != 0) { PyBuffer_Release(&data); return NULL; }
    pthread_mutex_lock(&self->lock);
    int failed = bytes_append(&self->out, data.buf, (size_t)data.len) != 0;
    pthread_mutex_unlock(&self->lock);
    PyBuffer_Release(&data);
    if (failed) return PyErr_NoMemory();
    wake(self);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(take_doc,
    "take() -> (sent, arrivals, ended): what happened since the last take. `sent`: the bytes of\n"
    "an int64 array, when each timed write went out, in order; `arrivals`: [(received_ns, bytes)],\n"
    "with split_answers a whole answer as (received_ns, stream_id, headers, message, trailers):\n"
    "the payloads of its HEADERS, DATA and trailing HEADERS frames;\n"
    "`ended`: None while the connection is open, else an OSError saying why it ended.");

static PyObject *TimedSocket_take(TimedSocket *self, PyObject *Py_UNUSED(ignored)) {
    pthread_mutex_lock(&self->lock);
    PyObject *sent = PyBytes_FromStringAndSize((const char *)self->sent_ns, (Py_ssize_t)(self->sent_count * sizeof(int64_t)));
    PyObject *arrivals = PyList_New((Py_ssize_t)self->arrival_count);
    size_t start = 0;
    for (size_t i = 0; arrivals && i < self->arrival_count; i++) {
        Arrival *a = &self->arrivals[i];
        const char *read = self->received.data + start;
        Answer answer;
        PyObject *item;
        if (self->split_answers && split_answer((const uint8_t *)read, a->end - start, &answer)) {
            item = Py_BuildValue("(Lky#y#y#)", (long long)a->at_ns, (unsigned long)answer.stream_id,
                                 read + answer.headers_at, (Py_ssize_t)answer.headers_size,
                                 read + answer.message_at, (Py_ssize_t)answer.message_size,
                                 read + answer.trailers_at, (Py_ssize_t)answer.trailers_size);
        } else {
            item = Py_BuildValue("(Ly#)", (long long)a->at_ns, read, (Py_ssize_t)(a->end - start));
        }
        if (!item) { Py_CLEAR(arrivals); break; }
        PyList_SET_ITEM(arrivals, (Py_ssize_t)i, item);
        start = a->end;
    }
    self->sent_count = 0;
    self->arrival_count = 0;
    self->received.size = 0;
    if (self->rung) {
        uint64_t count;
        (void)!read(self->ring_fd, &count, sizeof count);
        self->rung = 0;
    }
    int ended = self->ended;
    pthread_mutex_unlock(&self->lock);
    if (!sent || !arrivals) {
        Py_XDECREF(sent);
        Py_XDECREF(arrivals);
        return NULL;
    }
    PyObject *why;
    if (ended == 0) {
        why = Py_NewRef(Py_None);
    } else if (ended == -1) {
        why = PyObject_CallFunction(PyExc_ConnectionResetError, "s", "the server closed the connection");
    } else {
        why = PyObject_CallFunction(PyExc_OSError, "is", ended, strerror(ended));
    }
    if (!why) { Py_DECREF(sent); Py_DECREF(arrivals); return NULL; }
    return Py_BuildValue("(NNN)", sent, arrivals, why);
}

PyDoc_STRVAR(drop_unsent_doc, "drop_unsent() -> int: forgets the timed writes not yet due; how many.");

static PyObject *TimedSocket_drop_unsent(TimedSocket *self, PyObject *Py_UNUSED(ignored)) {
    pthread_mutex_lock(&self->lock);
    size_t dropped = self->due_count;
    self->due_count = 0;
    self->due_head = 0;
    self->queued.size = 0;
    pthread_mutex_unlock(&self->lock);
    return PyLong_FromSize_t(dropped);
}

PyDoc_STRVAR(close_doc, "close(): stops the thread and closes the socket; what was not written is lost.");

static PyObject *TimedSocket_close(TimedSocket *self, PyObject *Py_UNUSED(ignored)) {
    stop(self);
    Py_RETURN_NONE;
}

static PyObject *TimedSocket_ring_fd(TimedSocket *self, void *Py_UNUSED(closure)) {
    return PyLong_FromLong(self->ring_fd);
}

static PyMethodDef TimedSocket_methods[] = {
    {"write_at", (PyCFunction)TimedSocket_write_at, METH_VARARGS, write_at_doc},
    {"write", (PyCFunction)TimedSocket_write, METH_VARARGS, write_doc},
    {"take", (PyCFunction)TimedSocket_take, METH_NOARGS, take_doc},
    {"drop_unsent", (PyCFunction)TimedSocket_drop_unsent, METH_NOARGS, drop_unsent_doc},
    {"close", (PyCFunction)TimedSocket_close, METH_NOARGS, close_doc},
    {NULL, NULL, 0, NULL},
};

static PyObject *TimedSocket_kernel_stamps(TimedSocket *self, void *Py_UNUSED(closure)) {
    return PyBool_FromLong(self->kernel_stamps);
}

static PyGetSetDef TimedSocket_getset[] = {
    {"kernel_stamps", (getter)TimedSocket_kernel_stamps, NULL,
     "True when answers carry the kernel's arrival time (SO_TIMESTAMPING) and are read lazily.", NULL},
    {"ring_fd", (getter)TimedSocket_ring_fd, NULL,
     "An eventfd, readable when bytes read have waited ring_delay_ns or the connection ended (-1 once closed).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject TimedSocketType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "etude.services.loadgen._timed_socket.TimedSocket",
    .tp_doc = PyDoc_STR(
        "TimedSocket(fd, ring_delay_ns, kernel_stamps=True, split_answers=False): takes over the\n"
        "connected socket `fd` (closed by close()), writing at exact times and reading what arrives,\n"
        "on a thread of its own; with kernel_stamps (where the kernel offers them) each answer carries\n"
        "its arrival time; with split_answers take() hands over whole gRPC answers in pieces."),
    .tp_basicsize = sizeof(TimedSocket),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = TimedSocket_new,
    .tp_init = (initproc)TimedSocket_init,
    .tp_dealloc = (destructor)TimedSocket_dealloc,
    .tp_methods = TimedSocket_methods,
    .tp_getset = TimedSocket_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_timed_socket",
    .m_doc = "A socket written at exact times and read as bytes arrive, by a thread of its own.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__timed_socket(void) {
    if (PyType_Ready(&TimedSocketType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "TimedSocket", (PyObject *)&TimedSocketType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
