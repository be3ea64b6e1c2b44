/*
 * mmsim's guard against System.exit in a hosted application (JDK 17).
 *
 * The JVM lives in the simulator's own process (JPype), so Runtime.exit would end the simulator
 * with the application. While armed, checkExit records the status and throws a
 * SecurityException instead, which unwinds the calling thread; every other permission is
 * granted. Needs -Djava.security.manager=allow (mmsim adds it); gone in JDK 24.
 *
 * It also runs the application's main() on a Java thread of its own (runMain), as the java
 * launcher does: no Python thread ever runs the application's code, so suspending the
 * application to pace it can never leave Python's lock held by a suspended thread.
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

    /** What ended the last runMain's main(): null if it returned. */
    public static volatile Throwable failure;

    /** Start cls.main(args) on a new thread named "main"; the thread, to join and inspect. */
    public static Thread runMain(Class<?> cls, String[] args) throws NoSuchMethodException {
        final java.lang.reflect.Method main = cls.getMethod("main", String[].class);
        if (!java.lang.reflect.Modifier.isStatic(main.getModifiers())) {
            throw new NoSuchMethodException(cls.getName() + ".main is not static");
        }
        main.setAccessible(true); // a class that is not public, as the launcher allows
        failure = null;
        Thread t = new Thread(() -> {
            try {
                main.invoke(null, (Object) args);
            } catch (java.lang.reflect.InvocationTargetException e) {
                failure = e.getCause();
            } catch (Throwable e) {
                failure = e;
            }
        }, "main");
        t.setContextClassLoader(cls.getClassLoader());
        t.start();
        return t;
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
