import java.util.ArrayList;
import java.util.List;

/**
 * An allocation-heavy application: it keeps a working set of RETAIN_MIB MiB of 64 KiB blocks
 * and replaces blocks until TOTAL_MIB MiB were allocated, so the collector runs all along.
 * Optional PAUSE_MS sleeps after each MiB retained while the working set grows, so that a
 * balloon can follow the heap's growth. Deterministic: no randomness.
 *
 * Usage: Alloc TOTAL_MIB RETAIN_MIB [PAUSE_MS]
 */
public class Alloc {
    static final int BLOCK = 64 * 1024;

    public static void main(String[] args) throws InterruptedException {
        long total = args.length > 0 ? Long.parseLong(args[0]) : 2048;
        int retain = args.length > 1 ? Integer.parseInt(args[1]) : 64;
        int pause = args.length > 2 ? Integer.parseInt(args[2]) : 0;
        int perMib = (1 << 20) / BLOCK;
        int slots = retain * perMib;
        List<byte[]> live = new ArrayList<>(slots);
        long blocks = total * perMib;
        long checksum = 0;
        for (long i = 0; i < blocks; i++) {
            byte[] b = new byte[BLOCK];
            b[(int) (i % BLOCK)] = (byte) i;
            if (live.size() < slots) {
                live.add(b);
                if (pause > 0 && live.size() % perMib == 0) {
                    Thread.sleep(pause);
                }
            } else {
                int at = (int) ((i * 7919) % slots);
                checksum += live.get(at)[(int) ((i - 1) % BLOCK)];
                live.set(at, b);
            }
        }
        System.out.println("Alloc: " + total + " MiB allocated, " + retain
                + " MiB retained, checksum " + checksum);
    }
}
