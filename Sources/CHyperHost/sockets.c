// Descriptor passing and peer credentials on Unix sockets (see CHyperHost.h).
#define _GNU_SOURCE
#include "CHyperHost.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

ssize_t chyper_send_with_descriptors(int fd, const void *data, size_t length, const int *descriptors, int count) {
    if (count < 0 || count > CHYPER_MAX_PASSED_DESCRIPTORS || length == 0) {
        errno = EINVAL;
        return -1;
    }
    struct iovec part = {(void *)data, length};
    union {
        char bytes[CMSG_SPACE(sizeof(int) * CHYPER_MAX_PASSED_DESCRIPTORS)];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr message = {0};
    message.msg_iov = &part;
    message.msg_iovlen = 1;
    if (count > 0) {
        message.msg_control = control.bytes;
        message.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)count);
        struct cmsghdr *header = CMSG_FIRSTHDR(&message);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)count);
        memcpy(CMSG_DATA(header), descriptors, sizeof(int) * (size_t)count);
    }
    ssize_t sent;
    do { sent = sendmsg(fd, &message, MSG_NOSIGNAL); } while (sent < 0 && errno == EINTR);
    return sent;
}

ssize_t chyper_receive_with_descriptors(int fd, void *buffer, size_t capacity, int *descriptors, int max, int *count) {
    *count = 0;
    struct iovec part = {buffer, capacity};
    union {
        char bytes[CMSG_SPACE(sizeof(int) * CHYPER_MAX_PASSED_DESCRIPTORS)];
        struct cmsghdr align;
    } control;
    struct msghdr message = {0};
    message.msg_iov = &part;
    message.msg_iovlen = 1;
    message.msg_control = control.bytes;
    message.msg_controllen = sizeof control.bytes;
    ssize_t got;
    do { got = recvmsg(fd, &message, MSG_CMSG_CLOEXEC); } while (got < 0 && errno == EINTR);
    if (got < 0) return -1;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
        size_t n = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int received[CHYPER_MAX_PASSED_DESCRIPTORS];
        if (n > CHYPER_MAX_PASSED_DESCRIPTORS) n = CHYPER_MAX_PASSED_DESCRIPTORS;
        memcpy(received, CMSG_DATA(header), n * sizeof(int));
        for (size_t i = 0; i < n; i++) {
            if (*count < max) descriptors[(*count)++] = received[i];
            else close(received[i]);
        }
    }
    return got;
}

int chyper_peer_credentials(int fd, unsigned *uid, int *pid) {
    struct ucred credentials;
    socklen_t length = sizeof credentials;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) return -1;
    *uid = credentials.uid;
    *pid = credentials.pid;
    return 0;
}
