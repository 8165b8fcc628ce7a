// flora-eval's warm javac: the JDK's own compiler (javax.tools) in one JVM, asked once per
// program over the worker's pipes (WarmRequests.java: the protocol, and why "." and file names
// become absolute paths). Its answer is the cold `javac`'s: exit code, stdout and stderr, once
// the class files are written. Annotation processing is off (-proc:none): nothing of a program
// runs in this JVM.
import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.PrintStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import javax.tools.JavaCompiler;
import javax.tools.ToolProvider;

public class JavacWarm {
    private static String compile(JavaCompiler javac, String line) {
        Map<String, Object> request = WarmRequests.parse(line);
        String cwd = (String) request.get("cwd");
        List<String> args = new ArrayList<>();
        args.add("-proc:none");
        args.addAll(WarmRequests.arguments(request));
        if (!args.contains("-cp") && !args.contains("-classpath") && !args.contains("--class-path")) {
            // the cold javac's default: $CLASSPATH, else "." (this JVM's own class path is not it)
            String cp = System.getenv("CLASSPATH");
            List<String> entries = new ArrayList<>();
            for (String entry : (cp == null || cp.isEmpty() ? "." : cp).split(File.pathSeparator, -1)) {
                entries.add(entry.isEmpty() || entry.equals(".") ? cwd : entry);
            }
            args.add(0, String.join(File.pathSeparator, entries));
            args.add(0, "-classpath");
        }
        ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
        int code = javac.run(null, out, err, args.toArray(new String[0]));
        return WarmRequests.answer(code, out, err, cwd);
    }

    public static void main(String[] argv) throws Exception {
        JavaCompiler javac = ToolProvider.getSystemJavaCompiler();
        PrintStream pipe = WarmRequests.takePipe();
        WarmRequests.serve(pipe, line -> compile(javac, line));
    }
}
