// Only headers Glibc's module map lacks, and no _GNU_SOURCE: a different feature set would
// make the shared system types clash with Glibc's.
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/socket.h>
#include <signal.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>

extern int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
// malloc.h: glibc's heap trimming (Glibc's Swift module leaves malloc.h out).
extern int malloc_trim(size_t pad);
static inline int halley_malloc_trim(void) { return malloc_trim(0); }
// mallopt(M_MMAP_THRESHOLD, bytes): M_MMAP_THRESHOLD is -3 in malloc.h. Setting it also turns
// off glibc's dynamic threshold (which rises to the size of each mmapped block freed).
extern int mallopt(int param, int value);
static inline int halley_fixed_mmap_threshold(int bytes) { return mallopt(-3, bytes); }
// mallinfo2 (glibc 2.33): the heap's bytes in use and free, summed over every arena.
struct mallinfo2 {
    size_t arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost;
};
extern struct mallinfo2 mallinfo2(void);
static inline void halley_heap_bytes(size_t *in_use, size_t *free_bytes) {
    struct mallinfo2 m = mallinfo2();
    *in_use = m.uordblks + m.hblkhd;
    *free_bytes = m.fordblks;
}

// Glibc's Swift module lacks these; wrappers keep the flag constants usable from Swift.
static inline int halley_accept4(int fd, struct sockaddr *addr, socklen_t *len) {
    return accept4(fd, addr, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
}
static inline int halley_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }
static inline int halley_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

// epoll_event is packed on x86_64; build and read it in C so Swift never mis-lays it out.
static inline int halley_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev;
    ev.events = events;
    ev.data.u64 = data;
    return epoll_ctl(epfd, op, fd, &ev);
}
static inline size_t halley_epoll_event_size(void) { return sizeof(struct epoll_event); }
static inline uint32_t halley_epoll_event_events(const struct epoll_event *events, int i) {
    return events[i].events;
}
static inline uint64_t halley_epoll_event_data(const struct epoll_event *events, int i) {
    return events[i].data.u64;
}

// Block the shutdown signals in the calling thread (and the threads it starts) so that one
// thread can take them with sigwait.
static inline int halley_block_signals(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    return pthread_sigmask(SIG_BLOCK, &set, NULL);
}
static inline int halley_wait_signal(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    int sig = 0;
    if (sigwait(&set, &sig) != 0) return -1;
    return sig;
}
static inline void halley_ignore_sigpipe(void) { signal(SIGPIPE, SIG_IGN); }
static inline void halley_set_thread_name(const char *name) { prctl(PR_SET_NAME, name, 0, 0, 0); }
