import java.util.ArrayList;
import java.util.List;

/**
 * A server whose heap grows late: it idles for DELAY_MS (while the side workload fills the
 * file cache), then retains RETAIN_MIB MiB in 1 MiB steps, STEP_MS apart, and holds it for
 * HOLD_MS. Its heap pressure is what makes the balloon give memory back from the ARC.
 *
 * Usage: Grow DELAY_MS RETAIN_MIB STEP_MS HOLD_MS
 */
public class Grow {
    public static void main(String[] args) throws InterruptedException {
        long delay = Long.parseLong(args[0]);
        int retain = Integer.parseInt(args[1]);
        long step = Long.parseLong(args[2]);
        long hold = Long.parseLong(args[3]);
        Thread.sleep(delay);
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
