/* test_secure_env.cpp: EBB_OPTIONS in privileged programs, and the files the
 * stats timeline will write (issue 11, item 10).
 *
 * [secure_env] makes real setuid and setgid copies of secure_helper (so the
 * kernel sets AT_SECURE; needs root, skipped otherwise) and runs them with
 * an EBB_OPTIONS that asks for on_error=warn and a timeline over a root-only
 * file: the options must be ignored (a double free still aborts, the file
 * stays as it was, no file is created). The same binary without the bits
 * takes the options, which shows that the test can tell.
 * [timeline_files] asks for the timeline on a symbolic link, on a file that
 * holds data, on someone else's empty file and on one's own empty file:
 * only the last is written; nothing is followed or truncated. */
#include "api_util.h"
#include "child_util.h"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

using namespace apitest;

namespace {

std::string slurp(const std::string &path)
{
	std::ifstream in(path, std::ios::binary);
	std::stringstream ss;
	ss << in.rdbuf();
	return ss.str();
}

bool exists(const std::string &path)
{
	struct stat st;
	return lstat(path.c_str(), &st) == 0;
}

void put(const std::string &path, const std::string &text, mode_t mode)
{
	int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, mode);
	REQUIRE(fd >= 0);
	REQUIRE(write(fd, text.data(), text.size()) == (ssize_t)text.size());
	close(fd);
	REQUIRE(chmod(path.c_str(), mode) == 0);
}

std::string temp_dir()
{
	const char *t = getenv("TMPDIR");
	std::string tmpl = std::string(t && *t ? t : "/tmp") + "/ebb-secure-XXXXXX";
	char *d = mkdtemp(&tmpl[0]);
	REQUIRE(d != nullptr);
	REQUIRE(chmod(d, 0755) == 0); /* the unprivileged invoker must reach the binary */
	return tmpl;
}

struct Run {
	int status = -1;
	std::string out, err;
	bool exited(int code) const { return WIFEXITED(status) && WEXITSTATUS(status) == code; }
	bool signalled(int sig) const { return WIFSIGNALED(status) && WTERMSIG(status) == sig; }
};

/* Runs prog with EBB_OPTIONS=opts as user/group `id` (-1: as we are). */
Run run_as(const std::string &prog, const char *mode, int want_secure, const std::string &opts, int id)
{
	Run r;
	int out[2], err[2];
	REQUIRE(pipe(out) == 0);
	REQUIRE(pipe(err) == 0);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		dup2(out[1], 1);
		dup2(err[1], 2);
		close(out[0]);
		close(err[0]);
		if (id >= 0 && (setgroups(0, nullptr) != 0 || setgid((gid_t)id) != 0 || setuid((uid_t)id) != 0))
			_exit(126);
		std::string env = "EBB_OPTIONS=" + opts;
		char secure[2] = {(char)('0' + want_secure), 0};
		char *argv[] = {const_cast<char *>(prog.c_str()), const_cast<char *>(mode), secure, nullptr};
		char *envp[] = {&env[0], nullptr};
		execve(prog.c_str(), argv, envp);
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	char buf[4096];
	ssize_t n;
	while ((n = read(out[0], buf, sizeof buf)) > 0) r.out.append(buf, (size_t)n);
	while ((n = read(err[0], buf, sizeof buf)) > 0) r.err.append(buf, (size_t)n);
	close(out[0]);
	close(err[0]);
	REQUIRE(waitpid(pid, &r.status, 0) == pid);
	return r;
}

std::string copy_of(const std::string &from, const std::string &to, uid_t uid, gid_t gid, mode_t mode)
{
	std::string bytes = slurp(from);
	REQUIRE(!bytes.empty());
	put(to, bytes, 0700);
	REQUIRE(chown(to.c_str(), uid, gid) == 0);
	REQUIRE(chmod(to.c_str(), mode) == 0); /* after chown, which clears the set-id bits */
	return to;
}

} // namespace

TEST_CASE("a setuid or setgid program ignores EBB_OPTIONS: no warn mode, no timeline over a root-only file",
	  "[secure_env]")
{
	if (geteuid() != 0) {
		WARN("skipped: making setuid and setgid binaries needs root");
		return;
	}
	const std::string dir = temp_dir();
	const int nobody = 65534;
	const std::string precious = dir + "/root-only";
	put(precious, "root's data\n", 0600);
	const std::string fresh = dir + "/fresh.csv";

	const std::string plain = copy_of(EBB_SECURE_HELPER, dir + "/plain", 0, 0, 0755);
	const std::string suid = copy_of(EBB_SECURE_HELPER, dir + "/suid", 0, 0, 04755);
	const std::string sgid = copy_of(EBB_SECURE_HELPER, dir + "/sgid", 0, nobody, 02755);

	/* Control: without privileges the options are taken. */
	{
		Run r = run_as(plain, "options", 0, "on_error=warn,stats_interval_ms=1,stats_file=" + fresh, -1);
		INFO("plain: " << r.out << r.err);
		REQUIRE(r.exited(0));
		CHECK(r.out == "secure=0 on_error=1 interval=1 decay=500\n");
		CHECK(exists(fresh));
		unlink(fresh.c_str());
		Run d = run_as(plain, "doublefree", 0, "on_error=warn", -1);
		CHECK(d.exited(0));
		CHECK(d.err.find("double free") != std::string::npos);
	}

	struct Way {
		const char *what;
		std::string prog;
		int id;
	} ways[] = {{"setuid root, run by nobody", suid, nobody}, {"setgid nogroup, run by root", sgid, -1}};
	for (const Way &w : ways) {
		INFO(w.what);
		for (const std::string &target : {precious, fresh}) {
			Run r = run_as(w.prog, "options", 1,
				       "on_error=warn,decay_ms=1234,stats_interval_ms=1,stats_file=" + target, w.id);
			INFO("stdout: " << r.out << "stderr: " << r.err);
			if (r.exited(77)) {
				WARN("skipped: the kernel did not set AT_SECURE for " << w.what
									  << " (a nosuid mount?)");
				continue;
			}
			REQUIRE(r.exited(0));
			CHECK(r.out == "secure=1 on_error=0 interval=0 decay=500\n");
			CHECK(r.err.find("ebbmalloc") == std::string::npos); /* silently */
			CHECK(slurp(precious) == "root's data\n");
			CHECK(!exists(fresh));
		}
		Run d = run_as(w.prog, "doublefree", 1, "on_error=warn", w.id);
		if (d.exited(77))
			continue;
		INFO("stderr: " << d.err);
		CHECK(d.signalled(SIGABRT));
		CHECK(d.err.find("double free") != std::string::npos);
	}
	unlink(precious.c_str());
	unlink(plain.c_str());
	unlink(suid.c_str());
	unlink(sgid.c_str());
	rmdir(dir.c_str());
}

namespace {

/* In a forked child (which writes a timeline only to a name with "%p", its
 * own): `make` puts something at dir/<what>.<pid>.csv, then the timeline is
 * asked for on dir/<what>.%p.csv while the child allocates (rows due every
 * millisecond, so the file is opened at once); then `check` looks at what
 * became of it. Returns 0, or the number of the failed step. */
template <class Make, class Check>
int timeline_on(const std::string &dir, const char *what, Make make, Check check)
{
	alarm(20);
	const std::string path = dir + "/" + what + "." + std::to_string(getpid()) + ".csv";
	const std::string pattern = dir + "/" + what + ".%p.csv";
	if (!make(path)) return 2;
	if (ebb_option_set("background_thread", "0") != 0 || ebb_option_set("stats_file", pattern.c_str()) != 0 ||
	    ebb_option_set("stats_interval_ms", "1") != 0)
		return 3;
	for (int round = 0; round < 200; round++) {
		void *p[32];
		for (int i = 0; i < 32; i++) p[i] = ebb_malloc(64 * KiB + (size_t)i * 4096);
		for (int i = 0; i < 32; i++) ebb_free(p[i]);
		usleep(100);
	}
	if (ebb_option_set("stats_interval_ms", "0") != 0) return 4;
	int rc = check(path) ? 0 : 5;
	unlink(path.c_str());
	return rc;
}

bool put_raw(const std::string &path, const std::string &text, mode_t mode)
{
	int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, mode);
	if (fd < 0) return false;
	bool ok = write(fd, text.data(), text.size()) == (ssize_t)text.size();
	close(fd);
	return ok && chmod(path.c_str(), mode) == 0;
}

} // namespace

TEST_CASE("the timeline never follows a link, never truncates, writes only a new or its own empty file",
	  "[timeline_files]")
{
	const std::string dir = temp_dir();
	const std::string target = dir + "/target";
	const std::string data = "someone's data\n";

	SECTION("a symbolic link, to an existing file and dangling")
	{
		put(target, data, 0644);
		for (bool dangling : {false, true}) {
			const std::string to = dangling ? dir + "/nothing" : target;
			ChildResult c = run_child([&] {
				return timeline_on(
					dir, "link", [&](const std::string &p) { return symlink(to.c_str(), p.c_str()) == 0; },
					[&](const std::string &) { return true; });
			});
			INFO((dangling ? "dangling: " : "to a file: ") << c.err);
			CHECK((c.exited && c.code == 0));
			CHECK(c.err.find("is a symbolic link (never followed)") != std::string::npos);
		}
		CHECK(slurp(target) == data);
		CHECK(!exists(dir + "/nothing"));
		unlink(target.c_str());
	}
	SECTION("a file that holds data, even the process's own")
	{
		ChildResult c = run_child([&] {
			return timeline_on(
				dir, "data", [&](const std::string &p) { return put_raw(p, data, 0644); },
				[&](const std::string &p) { return slurp(p) == data; });
		});
		INFO(c.err);
		CHECK((c.exited && c.code == 0));
		CHECK(c.err.find("exists and is not an empty file of this user (never overwritten)") !=
		      std::string::npos);
	}
	SECTION("an empty file of another user")
	{
		if (geteuid() != 0) {
			WARN("skipped: giving a file to another user needs root");
			return;
		}
		ChildResult c = run_child([&] {
			return timeline_on(
				dir, "other",
				[&](const std::string &p) { return put_raw(p, "", 0666) && chown(p.c_str(), 65534, 65534) == 0; },
				[&](const std::string &p) { return slurp(p).empty(); });
		});
		INFO(c.err);
		CHECK((c.exited && c.code == 0));
		CHECK(c.err.find("exists and is not an empty file of this user") != std::string::npos);
	}
	SECTION("the process's own empty file (as mkstemp leaves it), and a new one")
	{
		for (bool fresh : {false, true}) {
			ChildResult c = run_child([&] {
				return timeline_on(
					dir, fresh ? "new" : "own",
					[&](const std::string &p) { return fresh || put_raw(p, "", 0600); },
					[&](const std::string &p) {
						std::string text = slurp(p);
						return text.rfind("t_ms,rss,", 0) == 0 &&
						       std::count(text.begin(), text.end(), '\n') >= 3;
					});
			});
			INFO((fresh ? "new: " : "own empty: ") << c.err);
			CHECK((c.exited && c.code == 0));
			CHECK(c.err.find("ebbmalloc") == std::string::npos);
		}
	}
	rmdir(dir.c_str());
}
