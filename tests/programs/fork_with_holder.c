/* Deadlock (child) of a program that is not Python: a thread named "holder" locks a mutex and
 * waits; main forks; the child locks the same mutex and sleeps forever. The lab sees this
 * parent's threads only through /proc at the fork event, and reads the mutex's owner (the
 * holder's TID) from the child's memory. Built by tests/test_fork_hook.py. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static int ready[2];

static void *hold(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mutex);
    if (write(ready[1], "x", 1) != 1)
        return NULL;
    for (;;)
        pause();
}

int main(void)
{
    pthread_t holder;
    char byte;
    int status;
    if (pipe(ready) != 0 || pthread_create(&holder, NULL, hold, NULL) != 0)
        return 2;
    pthread_setname_np(holder, "holder");
    if (read(ready[0], &byte, 1) != 1)
        return 2;
    pid_t pid = fork();
    if (pid == 0) {
        pthread_mutex_lock(&mutex);
        _exit(0);
    }
    waitpid(pid, &status, 0);
    return 0;
}
