import java.util.ArrayList;
import java.util.List;

/**
 * A server whose heap grows late: it first churns CHURN_MIB MiB of short-lived garbage (while
 * the side workload fills the file cache), then retains RETAIN_MIB MiB in 1 MiB steps, STEP_MS
 * apart, and holds it for HOLD_MS. Its heap pressure is what makes the balloon give memory back
 * from the ARC.
 *
 * The churn is the application's progress: mmsim's simulated time follows the bytes the
 * application allocates (jvm_alloc_rate, 1 GiB per simulated second by default), so a sleep
 * would stop the clock, and the scan beside it with it. Each 256 KiB array is stored in a
 * static field, so that escape analysis cannot remove the allocation, and dropped at the next.
 *
 * Usage: Grow CHURN_MIB RETAIN_MIB STEP_MS HOLD_MS
 */
public class Grow {
    static byte[] sink;

    public static void main(String[] args) throws InterruptedException {
        long churn = Long.parseLong(args[0]);
        int retain = Integer.parseInt(args[1]);
        long step = Long.parseLong(args[2]);
        long hold = Long.parseLong(args[3]);
        for (long i = 0; i < churn * 4; i++) {
            sink = new byte[256 * 1024];
        }
        sink = null;
        List<byte[]> live = new ArrayList<>();
        for (int i = 0; i < retain; i++) {
            for (int j = 0; j < 16; j++) {
                live.add(new byte[64 * 1024]);
            }
            Thread.sleep(step);
        }
        Thread.sleep(hold);
        System.out.println("Grow: retained " + live.size() / 16 + " MiB");
    }
}
