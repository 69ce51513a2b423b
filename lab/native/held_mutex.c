/* A pthread mutex held by a native thread that Python's threading module never sees.
 *
 * lab_hold_mutex_in_native_thread() starts a pthread that locks `held`, writes one byte to
 * ready_fd (the caller's handshake) and then blocks in read(2) on a private pipe that only
 * lab_release_mutex() writes to. A process forked meanwhile inherits `held` locked by a
 * thread it does not have: lab_lock_mutex() then waits in futex(FUTEX_WAIT_PRIVATE, NULL
 * timeout) forever (glibc nptl/lowlevellock.c, __lll_lock_wait).
 *
 * All functions return 0 or an errno value; lab_mutex_owner_tid() returns a TID.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

static pthread_mutex_t held = PTHREAD_MUTEX_INITIALIZER;
static pthread_t holder;
static int started;
static int wake[2] = {-1, -1};  /* the holder reads wake[0]; lab_release_mutex writes wake[1] */

static void *hold(void *arg)
{
    int ready_fd = (int)(intptr_t)arg;
    char byte = 'R';
    ssize_t n;

    pthread_mutex_lock(&held);
    while (write(ready_fd, &byte, 1) < 0 && errno == EINTR)
        ;
    do
        n = read(wake[0], &byte, 1);
    while (n < 0 && errno == EINTR);
    pthread_mutex_unlock(&held);
    return NULL;
}

int lab_hold_mutex_in_native_thread(int ready_fd)
{
    int rc;

    if (started)
        return EBUSY;
    if (pipe(wake) != 0)
        return errno;
    rc = pthread_create(&holder, NULL, hold, (void *)(intptr_t)ready_fd);
    if (rc != 0) {
        close(wake[0]);
        close(wake[1]);
        return rc;
    }
    started = 1;
    return 0;
}

int lab_lock_mutex(void)
{
    return pthread_mutex_lock(&held);
}

/* Wake the holder, let it unlock and join it (only in the process that started it). */
int lab_release_mutex(void)
{
    char byte = 'W';
    int rc;

    if (!started)
        return ESRCH;
    while (write(wake[1], &byte, 1) < 0)
        if (errno != EINTR)
            return errno;
    rc = pthread_join(holder, NULL);
    close(wake[0]);
    close(wake[1]);
    started = 0;
    return rc;
}

/* The TID glibc records as the owner of `held` (0 when unlocked, -1 when not glibc). */
int lab_mutex_owner_tid(void)
{
#ifdef __GLIBC__
    return __atomic_load_n(&held.__data.__owner, __ATOMIC_RELAXED);
#else
    return -1;
#endif
}
