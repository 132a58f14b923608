/* The reference of a no-op and a drift cycle in fleet_bench, as a process: lstat, read and
 * SHA-256 (libgcrypt's, as tetherd's) of each file listed in LIST, one path per line. What
 * any agent must at least do to know that nothing changed, written as a C program does it.
 *
 *   fleet_ref LIST
 */
#include <fcntl.h>
#include <gcrypt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: fleet_ref LIST\n");
    return 2;
  }
  if (gcry_check_version(NULL) == NULL) return 1;
  gcry_control(GCRYCTL_DISABLE_SECMEM, 0);
  gcry_control(GCRYCTL_INITIALIZATION_FINISHED, 0);
  FILE* list = fopen(argv[1], "r");
  if (list == NULL) {
    perror(argv[1]);
    return 1;
  }
  char path[4096];
  char* buffer = NULL;
  size_t capacity = 0;
  unsigned char digest[32];
  unsigned sum = 0;
  while (fgets(path, sizeof(path), list) != NULL) {
    path[strcspn(path, "\n")] = '\0';
    struct stat st;
    if (lstat(path, &st) != 0) {
      perror(path);
      return 1;
    }
    const size_t size = (size_t)st.st_size;
    if (size > capacity) {
      free(buffer);
      capacity = size;
      buffer = malloc(capacity);
      if (buffer == NULL) return 1;
    }
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, buffer, size) != (ssize_t)size) {
      perror(path);
      return 1;
    }
    close(fd);
    gcry_md_hash_buffer(GCRY_MD_SHA256, digest, buffer, size);
    sum += digest[0];
  }
  fclose(list);
  free(buffer);
  return sum == 0xffffffffu ? 1 : 0; /* uses the digests, so that no work is left out */
}
