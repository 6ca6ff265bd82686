/* A UDP delay line in C: what bench/udp_relay.py does for delay and loss, at a cost per
 * datagram close to sch_netem's (this kernel has no netem).
 *
 *     cc -O2 -o udp_delay bench/udp_delay.c
 *     udp_delay LISTEN_IP:PORT SERVER_IP:PORT DELAY_MS LOSS SEED
 *
 * The Python relay pays ~150 µs per datagram in the interpreter and select() on a
 * slow machine, which a 16-block window pays 16 times; this one pays a few µs. Same
 * routing as udp_relay.py: each client address gets its own upstream socket, replies
 * from any server port go back from the listening port, the client's next datagrams go to
 * the server port that spoke last, and a TFTP request (RRQ/WRQ) always goes to SERVER.
 * The delay is the same for every datagram, so the queue is a FIFO. The loop sleeps in
 * ppoll() (nanosecond timeout, 1 ns timer slack) until SPIN_NS before the next datagram
 * is due, then polls. Loss is drawn from a seeded xorshift generator. Prints READY when
 * listening; prints counts and exits on SIGTERM.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS 64
#define QUEUE_SLOTS 65536 /* a power of two */
#define MAX_DATAGRAM 65536
#ifndef SPIN_NS
#define SPIN_NS 100000LL
#endif

struct client {
    struct sockaddr_in addr;   /* the client, as the front socket sees it */
    struct sockaddr_in server; /* where its datagrams go: the TID that spoke last */
    int fd;                    /* its upstream socket */
};

struct pending {
    int64_t due;
    int fd;
    struct sockaddr_in to;
    size_t len;
    unsigned char *data;
};

static volatile sig_atomic_t running = 1;
static struct client clients[MAX_CLIENTS];
static int client_count;
static struct pending queue[QUEUE_SLOTS];
static unsigned head, tail; /* queue[head..tail) */
static uint64_t rng_state;
static unsigned long forwarded, dropped;

static void stop(int signum) { (void)signum; running = 0; }

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double next_uniform(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / (double)(1ULL << 53);
}

static int parse_address(const char *text, struct sockaddr_in *out) {
    char host[64];
    const char *colon = strrchr(text, ':');
    if (colon == NULL || (size_t)(colon - text) >= sizeof host) return -1;
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)atoi(colon + 1));
    return inet_pton(AF_INET, host, &out->sin_addr) == 1 ? 0 : -1;
}

static int udp_socket(const struct sockaddr_in *bind_to) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    int size = 4 * 1024 * 1024;
    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    if (bind(fd, (const struct sockaddr *)bind_to, sizeof *bind_to) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void later(int fd, const struct sockaddr_in *to, const unsigned char *data, size_t len,
                  int64_t delay) {
    struct pending *slot;
    if ((tail - head) >= QUEUE_SLOTS) {
        dropped++;
        return;
    }
    slot = &queue[tail % QUEUE_SLOTS];
    slot->data = malloc(len ? len : 1);
    if (slot->data == NULL) {
        dropped++;
        return;
    }
    memcpy(slot->data, data, len);
    slot->len = len;
    slot->fd = fd;
    slot->to = *to;
    slot->due = now_ns() + delay;
    tail++;
    forwarded++;
}

int main(int argc, char **argv) {
    struct sockaddr_in listen_addr, server_addr, upstream_bind;
    struct pollfd fds[MAX_CLIENTS + 1];
    static unsigned char buffer[MAX_DATAGRAM];
    int front, i;
    int64_t delay;
    double loss;

    if (argc != 6 || parse_address(argv[1], &listen_addr) || parse_address(argv[2], &server_addr)) {
        fprintf(stderr, "usage: %s LISTEN_IP:PORT SERVER_IP:PORT DELAY_MS LOSS SEED\n", argv[0]);
        return 2;
    }
    delay = (int64_t)(atof(argv[3]) * 1e6);
    loss = atof(argv[4]);
    rng_state = 0x9E3779B97F4A7C15ULL ^ (uint64_t)atoll(argv[5]);
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    signal(SIGTERM, stop);
    signal(SIGINT, stop);
    front = udp_socket(&listen_addr);
    if (front < 0) {
        perror("bind");
        return 1;
    }
    upstream_bind = listen_addr;
    upstream_bind.sin_port = 0;
    printf("READY\n");
    fflush(stdout);

    while (running) {
        int64_t now = now_ns();
        struct timespec timeout;
        int nfds, ready;

        while (head != tail && queue[head % QUEUE_SLOTS].due <= now) {
            struct pending *slot = &queue[head % QUEUE_SLOTS];
            sendto(slot->fd, slot->data, slot->len, 0, (struct sockaddr *)&slot->to,
                   sizeof slot->to);
            free(slot->data);
            head++;
        }
        if (head != tail) {
            int64_t wait = queue[head % QUEUE_SLOTS].due - now_ns() - SPIN_NS;
            if (wait < 0) wait = 0;
            timeout.tv_sec = wait / 1000000000LL;
            timeout.tv_nsec = wait % 1000000000LL;
        } else {
            timeout.tv_sec = 0;
            timeout.tv_nsec = 100000000L;
        }
        fds[0].fd = front;
        fds[0].events = POLLIN;
        for (i = 0; i < client_count; i++) {
            fds[i + 1].fd = clients[i].fd;
            fds[i + 1].events = POLLIN;
        }
        nfds = client_count + 1;
        ready = ppoll(fds, (nfds_t)nfds, &timeout, NULL);
        if (ready <= 0) continue;
        for (i = 0; i < nfds; i++) {
            if (!(fds[i].revents & POLLIN)) continue;
            for (;;) {
                struct sockaddr_in from;
                socklen_t from_len = sizeof from;
                ssize_t got = recvfrom(fds[i].fd, buffer, sizeof buffer, 0,
                                       (struct sockaddr *)&from, &from_len);
                if (got < 0) break; /* EAGAIN, or an ICMP error from a closed port */
                if (loss > 0.0 && next_uniform() < loss) {
                    dropped++;
                    continue;
                }
                if (i == 0) { /* from a client */
                    struct client *c = NULL;
                    int j, request;
                    for (j = 0; j < client_count; j++)
                        if (clients[j].addr.sin_addr.s_addr == from.sin_addr.s_addr &&
                            clients[j].addr.sin_port == from.sin_port) {
                            c = &clients[j];
                            break;
                        }
                    if (c == NULL) {
                        if (client_count == MAX_CLIENTS) {
                            dropped++;
                            continue;
                        }
                        c = &clients[client_count];
                        c->fd = udp_socket(&upstream_bind);
                        if (c->fd < 0) {
                            dropped++;
                            continue;
                        }
                        c->addr = from;
                        c->server = server_addr;
                        client_count++;
                    }
                    request = got >= 2 && buffer[0] == 0 && (buffer[1] == 1 || buffer[1] == 2);
                    later(c->fd, request ? &server_addr : &c->server, buffer, (size_t)got, delay);
                } else { /* from the server, to client i-1 */
                    struct client *c = &clients[i - 1];
                    c->server = from;
                    later(front, &c->addr, buffer, (size_t)got, delay);
                }
            }
        }
    }
    fprintf(stderr, "forwarded %lu dropped %lu\n", forwarded, dropped);
    return 0;
}
