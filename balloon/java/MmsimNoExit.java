/*
 * mmsim's guard against System.exit in a hosted application (JDK 17).
 *
 * The JVM lives in the simulator's own process (JPype), so Runtime.exit would end the simulator
 * with the application. While armed, checkExit records the status and throws a
 * SecurityException instead, which unwinds the calling thread; every other permission is
 * granted. Needs -Djava.security.manager=allow (mmsim adds it); gone in JDK 24.
 */
public final class MmsimNoExit extends SecurityManager {
    public static volatile boolean armed;
    public static volatile int status = Integer.MIN_VALUE;

    public static synchronized void install() {
        if (!(System.getSecurityManager() instanceof MmsimNoExit)) {
            System.setSecurityManager(new MmsimNoExit());
        }
    }

    public static void arm() {
        status = Integer.MIN_VALUE;
        armed = true;
    }

    public static void disarm() {
        armed = false;
    }

    @Override
    public void checkExit(int s) {
        if (armed) {
            if (status == Integer.MIN_VALUE) {
                status = s;
            }
            throw new SecurityException("System.exit(" + s + ") intercepted by mmsim");
        }
    }

    @Override
    public void checkPermission(java.security.Permission p) {
    }

    @Override
    public void checkPermission(java.security.Permission p, Object context) {
    }
}
