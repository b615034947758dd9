/*
 * The limit reference of the queue benchmarks: the least a program can do per queued packet.
 *
 * Binds one NFQUEUE queue with the socket settings of edufilter.capture._queue.PacketQueue (copy mode
 * packet, queue max length, NFQA_CFG_F_GSO, optional fail-open, a forced receive buffer,
 * NETLINK_NO_ENOBUFS), reads bursts with recvmmsg and accepts each burst with one
 * NFQNL_MSG_VERDICT_BATCH for its highest packet id. Built by the benchmark at run time
 * (edufilter_lab.reference_loop.build_accept_all); never committed as a binary.
 *
 * usage: nfq_accept_all --queue N [--max-length 8192] [--copy-range 65535] [--batch 64]
 *                       [--receive-buffer BYTES] [--fail-open] [--seconds S]
 * Prints "ready" once bound, and one JSON line of counters when it stops (SIGTERM, SIGINT or
 * after --seconds).
 */
#define _GNU_SOURCE /* recvmmsg */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <arpa/inet.h>

#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

#define MAX_BATCH 1024
#define SLOT_HEADROOM 2048

static volatile sig_atomic_t stopping;

static void request_stop(int signal_number)
{
	(void)signal_number;
	stopping = 1;
}

static double monotonic_seconds(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec + now.tv_nsec * 1e-9;
}

static void fail(const char *what)
{
	fprintf(stderr, "nfq_accept_all: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* Bind (acknowledged) before switching on copies, so no packet can precede the ack. */
static void bind_queue(struct mnl_socket *socket, uint16_t queue, uint32_t max_length,
		       uint32_t copy_range, int fail_open)
{
	char buffer[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *message;
	uint32_t flags = NFQA_CFG_F_GSO | (fail_open ? NFQA_CFG_F_FAIL_OPEN : 0);
	uint32_t mask = NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN;
	unsigned int portid = mnl_socket_get_portid(socket);
	ssize_t received;

	message = nfq_nlmsg_put(buffer, NFQNL_MSG_CONFIG, queue);
	nfq_nlmsg_cfg_put_cmd(message, AF_UNSPEC, NFQNL_CFG_CMD_BIND);
	nfq_nlmsg_cfg_put_qmaxlen(message, max_length);
	mnl_attr_put_u32(message, NFQA_CFG_FLAGS, htonl(flags));
	mnl_attr_put_u32(message, NFQA_CFG_MASK, htonl(mask));
	message->nlmsg_flags |= NLM_F_ACK;
	message->nlmsg_seq = 1;
	if (mnl_socket_sendto(socket, message, message->nlmsg_len) < 0)
		fail("bind");
	received = mnl_socket_recvfrom(socket, buffer, sizeof(buffer));
	if (received < 0 || mnl_cb_run(buffer, received, 1, portid, NULL, NULL) < 0)
		fail("bind");

	message = nfq_nlmsg_put(buffer, NFQNL_MSG_CONFIG, queue);
	nfq_nlmsg_cfg_put_params(message, NFQNL_COPY_PACKET, copy_range);
	if (mnl_socket_sendto(socket, message, message->nlmsg_len) < 0)
		fail("copy mode");
}

static void set_socket_options(int fd, int receive_buffer)
{
	int enabled = 1;
	struct timeval wake_up = { .tv_sec = 0, .tv_usec = 100000 };

	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &receive_buffer, sizeof(int)) < 0 &&
	    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof(int)) < 0)
		fail("receive buffer");
	if (setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &enabled, sizeof(int)) < 0)
		fail("NETLINK_NO_ENOBUFS");
	/* Blocking receive that still wakes up to see --seconds and signals. */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wake_up, sizeof(wake_up)) < 0)
		fail("SO_RCVTIMEO");
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{ "queue", required_argument, NULL, 'q' },
		{ "max-length", required_argument, NULL, 'l' },
		{ "copy-range", required_argument, NULL, 'r' },
		{ "batch", required_argument, NULL, 'b' },
		{ "receive-buffer", required_argument, NULL, 'm' },
		{ "fail-open", no_argument, NULL, 'f' },
		{ "seconds", required_argument, NULL, 's' },
		{ NULL, 0, NULL, 0 },
	};
	long queue = -1, max_length = 8192, copy_range = 0xffff, batch = 64, receive_buffer = 0;
	int fail_open = 0, option;
	double seconds = 0, deadline;
	struct mnl_socket *socket;
	struct mmsghdr *messages;
	struct iovec *slots;
	size_t slot_size;
	char *memory;
	char verdict_buffer[MNL_SOCKET_BUFFER_SIZE];
	unsigned long long packets = 0, bursts = 0, errors = 0;
	struct sigaction action;
	int fd, i;

	while ((option = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (option) {
		case 'q': queue = strtol(optarg, NULL, 0); break;
		case 'l': max_length = strtol(optarg, NULL, 0); break;
		case 'r': copy_range = strtol(optarg, NULL, 0); break;
		case 'b': batch = strtol(optarg, NULL, 0); break;
		case 'm': receive_buffer = strtol(optarg, NULL, 0); break;
		case 'f': fail_open = 1; break;
		case 's': seconds = strtod(optarg, NULL); break;
		default: return 2;
		}
	}
	if (queue < 0 || queue > 0xffff || max_length < 1 || copy_range < 1 ||
	    copy_range > 0xffff || batch < 1 || batch > MAX_BATCH) {
		fprintf(stderr, "nfq_accept_all: --queue 0-65535 is required; see the header\n");
		return 2;
	}
	if (receive_buffer <= 0)
		receive_buffer = max_length * 2048;

	memset(&action, 0, sizeof(action));
	action.sa_handler = request_stop;
	sigaction(SIGTERM, &action, NULL);
	sigaction(SIGINT, &action, NULL);

	slot_size = copy_range + SLOT_HEADROOM;
	memory = malloc(batch * slot_size);
	messages = calloc(batch, sizeof(*messages));
	slots = calloc(batch, sizeof(*slots));
	if (!memory || !messages || !slots)
		fail("memory");
	for (i = 0; i < batch; i++) {
		slots[i].iov_base = memory + i * slot_size;
		slots[i].iov_len = slot_size;
		messages[i].msg_hdr.msg_iov = &slots[i];
		messages[i].msg_hdr.msg_iovlen = 1;
	}

	socket = mnl_socket_open(NETLINK_NETFILTER);
	if (!socket || mnl_socket_bind(socket, 0, MNL_SOCKET_AUTOPID) < 0)
		fail("netlink socket");
	fd = mnl_socket_get_fd(socket);
	set_socket_options(fd, receive_buffer);
	bind_queue(socket, queue, max_length, copy_range, fail_open);
	printf("ready\n");
	fflush(stdout);

	deadline = seconds > 0 ? monotonic_seconds() + seconds : 0;
	while (!stopping && (deadline == 0 || monotonic_seconds() < deadline)) {
		uint32_t highest = 0;
		int received, packets_in_burst = 0;
		struct nlmsghdr *verdict;

		received = recvmmsg(fd, messages, batch, MSG_WAITFORONE, NULL);
		if (received < 0) {
			if (errno == EAGAIN || errno == EINTR || errno == ENOBUFS)
				continue;
			fail("recvmmsg");
		}
		for (i = 0; i < received; i++) {
			struct nlmsghdr *message = slots[i].iov_base;
			struct nlattr *attributes[NFQA_MAX + 1] = { NULL };
			struct nfqnl_msg_packet_hdr *header;

			if (messages[i].msg_len < sizeof(*message) ||
			    message->nlmsg_type != ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET)) {
				errors++;
				continue;
			}
			if (nfq_nlmsg_parse(message, attributes) < 0 || !attributes[NFQA_PACKET_HDR]) {
				errors++;
				continue;
			}
			header = mnl_attr_get_payload(attributes[NFQA_PACKET_HDR]);
			highest = ntohl(header->packet_id);
			packets_in_burst++;
		}
		if (!packets_in_burst)
			continue;
		verdict = nfq_nlmsg_put(verdict_buffer, NFQNL_MSG_VERDICT_BATCH, queue);
		nfq_nlmsg_verdict_put(verdict, highest, NF_ACCEPT);
		if (mnl_socket_sendto(socket, verdict, verdict->nlmsg_len) < 0)
			fail("verdict");
		packets += packets_in_burst;
		bursts++;
	}
	printf("{\"packets\": %llu, \"bursts\": %llu, \"errors\": %llu}\n", packets, bursts, errors);
	mnl_socket_close(socket);
	return 0;
}
